package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/natsauth"
)

// newInitCmd creates the operator and account keys once, before the
// nodes of a cluster start: nodes in cluster mode never create them, so
// that nodes starting together cannot each make an operator of their own.
func newInitCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "init --config FILE",
		Short: "Create the operator and account keys in auth_dir (once, before a cluster's nodes start)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := broker.Config{}.WithDefaults()
			if cfgPath != "" {
				var err error
				if cfg, err = broker.LoadConfig(cfgPath); err != nil {
					return err
				}
			}
			if _, err := natsauth.OpenExisting(cfg.AuthDir()); err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "keys already in %s: nothing to do\n", cfg.AuthDir())
				return nil
			}
			a, err := natsauth.Open(cfg.AuthDir())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "operator and accounts created in %s (tenant account %s)\n", a.Dir(), a.TenantAccount())
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML configuration file (its auth_dir, or data_dir/auth)")
	return cmd
}
