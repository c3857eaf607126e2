// Command fsbench runs fieldsync's benchmarks. Each prints its figure next
// to the limit it is measured against, measured in the same run:
//
//	fsbench initial-sync --records 1000000
//	fsbench writes
//	fsbench apply
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{Use: "fsbench", Short: "fieldsync benchmarks", SilenceUsage: true}
	root.AddCommand(newInitialSyncCmd(), newAgentChildCmd(), newWritesCmd(), newWriteAgentCmd(), newApplyCmd())
	return root
}
