package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// newHealthcheckCmd asks the running agent's local API for its status and
// exits 0 when it answers: the container health check of images that
// have no shell or curl (see docker-compose.yml). With --synced it also
// needs a completed full sync (the device works offline from then on).
func newHealthcheckCmd(g *globals) *cobra.Command {
	var synced bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck [--synced]",
		Short: "Exit 0 if the agent's local API answers (a container health check)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := c.Status(ctx)
			if err != nil {
				return fmt.Errorf("unhealthy: %w", err)
			}
			if synced && st.OnlineOnly {
				return fmt.Errorf("unhealthy: no full sync completed yet (state %s)", st.State)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "healthy: %s, state %s\n", st.DeviceID, st.State)
			return nil
		},
	}
	cmd.Flags().BoolVar(&synced, "synced", false, "also require a completed full sync")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}
