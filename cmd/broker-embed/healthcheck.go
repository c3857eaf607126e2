package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/broker"
)

// newHealthcheckCmd asks a running broker's GET /healthz and exits 0 only
// on 200: the container health check of images that have no shell or
// curl (see docker-compose.yml).
func newHealthcheckCmd() *cobra.Command {
	var cfgPath, url string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck [--config FILE | --url URL]",
		Short: "Exit 0 if the broker's /healthz answers 200 (a container health check)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				cfg := broker.Config{}.WithDefaults()
				if cfgPath != "" {
					var err error
					if cfg, err = broker.LoadConfig(cfgPath); err != nil {
						return err
					}
				}
				url = "http://" + loopbackAddr(cfg.HTTPAddr) + "/healthz"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return checkHealth(ctx, url, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the broker's YAML configuration (its http_addr)")
	cmd.Flags().StringVar(&url, "url", "", "health URL (default: http://<http_addr>/healthz, a wildcard host asked on 127.0.0.1)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}

// loopbackAddr turns a listen address with a wildcard host (0.0.0.0, ::,
// empty) into the same port on 127.0.0.1, where a local check reaches it.
func loopbackAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// checkHealth GETs url and returns nil on 200, else an error with the
// answer's body (its reason).
func checkHealth(ctx context.Context, url string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s: %s", resp.Status, body)
	}
	fmt.Fprintf(out, "healthy: %s", body)
	return nil
}
