package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/localapi"
)

func newRunCmd() *cobra.Command {
	var cfgPath string
	var debug bool
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent: sync with the broker and serve the local API and status page",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := agent.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			a, err := agent.Open(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer a.Close()
			return localapi.RunAgent(cmd.Context(), a, log, func(addr net.Addr) {
				fmt.Fprintf(cmd.OutOrStdout(), "device-agent %s: status page http://%s/ (broker %s)\n", cfg.DeviceID, addr, cfg.BrokerURL)
			})
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "device-agent.yaml", "YAML configuration file")
	cmd.Flags().BoolVar(&debug, "debug", false, "debug logging")
	return cmd
}
