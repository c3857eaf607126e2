package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/broker"
)

func newRunCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "run [--config FILE]",
		Short: "Run the broker (single node on 127.0.0.1:4222 with no config)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := broker.Config{}.WithDefaults()
			if cfgPath != "" {
				var err error
				if cfg, err = broker.LoadConfig(cfgPath); err != nil {
					return err
				}
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			b, err := broker.Open(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			log.Info("shutting down")
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			return b.Close(ctx)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML configuration file (every key has a default)")
	return cmd
}
