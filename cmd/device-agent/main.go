// Command device-agent is fieldsync's device agent: `run` keeps the
// device's local store in sync and serves the local API; the other
// subcommands talk to a running agent through that API.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/localapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

type globals struct {
	api       string
	json      bool
	config    string
	tokenFile string
}

// client returns an API client with the local token: $FIELDSYNC_AGENT_TOKEN,
// else the --token-file, else the api-token file in the data folder of the
// --config file (or the default data folder when there is none).
func (g *globals) client() (*localapi.Client, error) {
	if tok := os.Getenv("FIELDSYNC_AGENT_TOKEN"); tok != "" {
		return localapi.NewClient(g.api, tok), nil
	}
	path := g.tokenFile
	if path == "" {
		dir := agent.DefaultDataDir()
		if cfg, err := agent.LoadConfig(g.config); err == nil {
			dir = cfg.DataDir
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		path = localapi.TokenPath(dir)
	}
	tok, err := localapi.ReadToken(path)
	if err != nil {
		return nil, fmt.Errorf("%w (is the agent running as this user? pass --config or --token-file)", err)
	}
	return localapi.NewClient(g.api, tok), nil
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "device-agent",
		Short:         "fieldsync device agent: offline sync of org unit data into a local store",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.api, "api", envOr("FIELDSYNC_AGENT_API", "127.0.0.1:7480"), "local API address of the running agent")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON for scripts")
	root.PersistentFlags().StringVar(&g.config, "config", envOr("FIELDSYNC_AGENT_CONFIG", defaultConfigPath()), "agent YAML configuration file")
	root.PersistentFlags().StringVar(&g.tokenFile, "token-file", "", "local API token file (default: api-token in the agent's data folder)")
	root.AddCommand(newRunCmd(g), newStatusCmd(g), newSyncCmd(g), newRecordsCmd(g), newWriteCmd(g), newConflictsCmd(g), newResolveCmd(g), newApplyCmd(g), newOpenCmd(g), newServiceCmd(g))
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
