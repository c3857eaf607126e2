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
		Short: "Create the operator and account keys and the route secret in auth_dir (once, before a cluster's nodes start)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := broker.Config{}.WithDefaults()
			if cfgPath != "" {
				var err error
				if cfg, err = broker.LoadConfig(cfgPath); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if _, err := natsauth.OpenExisting(cfg.AuthDir()); err == nil {
				fmt.Fprintf(out, "keys already in %s\n", cfg.AuthDir())
			} else {
				a, err := natsauth.Open(cfg.AuthDir())
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "operator and accounts created in %s (tenant account %s)\n", a.Dir(), a.TenantAccount())
			}
			created, err := natsauth.EnsureRouteSecret(cfg.AuthDir())
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(out, "route secret created in %s: the cluster's nodes authenticate their routes with it\n", cfg.AuthDir())
			} else {
				fmt.Fprintln(out, "route secret already there: nothing else to do")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML configuration file (its auth_dir, or data_dir/auth)")
	return cmd
}
