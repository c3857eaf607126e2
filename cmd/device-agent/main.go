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

// client returns an API client for the agent of --config: at --api (or
// $FIELDSYNC_AGENT_API), else the config's api_addr; with the token of
// $FIELDSYNC_AGENT_TOKEN, else the --token-file, else the api-token file in
// the config's data folder. Without a config file the defaults apply.
func (g *globals) client() (*localapi.Client, error) {
	cfg, err := agent.LoadConfig(g.config)
	if errors.Is(err, os.ErrNotExist) {
		cfg, err = agent.Config{}.WithDefaults(), nil
	}
	if err != nil {
		return nil, err
	}
	addr := g.api
	if addr == "" {
		addr = cfg.APIAddr
	}
	if tok := os.Getenv("FIELDSYNC_AGENT_TOKEN"); tok != "" {
		return localapi.NewClient(addr, tok), nil
	}
	path := g.tokenFile
	if path == "" {
		path = localapi.TokenPath(cfg.DataDir)
	}
	tok, err := localapi.ReadToken(path)
	if err != nil {
		return nil, fmt.Errorf("%w (is the agent running as this user? pass --config or --token-file)", err)
	}
	return localapi.NewClient(addr, tok), nil
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "device-agent",
		Short:         "fieldsync device agent: offline sync of org unit data into a local store",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.api, "api", os.Getenv("FIELDSYNC_AGENT_API"), "local API address of the running agent (default: api_addr of --config, 127.0.0.1:7480)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON for scripts")
	root.PersistentFlags().StringVar(&g.config, "config", envOr("FIELDSYNC_AGENT_CONFIG", defaultConfigPath()), "agent YAML configuration file")
	root.PersistentFlags().StringVar(&g.tokenFile, "token-file", "", "local API token file (default: api-token in the agent's data folder)")
	root.AddCommand(newRunCmd(g), newStatusCmd(g), newSyncCmd(g), newRecordsCmd(g), newWriteCmd(g), newConflictsCmd(g), newResolveCmd(g), newApplyCmd(g), newOpenCmd(g), newServiceCmd(g),
		newDocumentsCmd(g), newDownloadCmd(g), newHealthcheckCmd(g))
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
