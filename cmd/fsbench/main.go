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
	"runtime/pprof"

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
	var cpuProfile string
	root := &cobra.Command{Use: "fsbench", Short: "fieldsync benchmarks", SilenceUsage: true}
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of this process (broker, server side and load) to `FILE`; FS_AGENT_CPUPROFILE does the same for agent processes")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuProfile == "" {
			return nil
		}
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		return pprof.StartCPUProfile(f)
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if cpuProfile != "" {
			pprof.StopCPUProfile()
		}
	}
	root.AddCommand(newInitialSyncCmd(), newAgentChildCmd(), newWritesCmd(), newWriteAgentCmd(), newApplyCmd(), newConnectCmd(), newConnectClientsCmd(), newFeedCmd(), newDocumentsCmd(), newConsumersCmd())
	return root
}
