// Command device-agent is fieldsync's device agent: `run` keeps the
// device's local store in sync and serves the local API; the other
// subcommands talk to a running agent through that API.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
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
	api  string
	json bool
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
	root.AddCommand(newRunCmd(), newStatusCmd(g), newSyncCmd(g), newRecordsCmd(g), newWriteCmd(g), newConflictsCmd(g), newResolveCmd(g), newApplyCmd(g))
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
