package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/seed"
)

func newSeedCmd() *cobra.Command {
	var spec seed.Spec
	var url string
	var auth toolAuth
	cmd := &cobra.Command{
		Use:   "seed --org U --events N --admin N --documents N",
		Short: "Publish synthetic records to a running broker",
		RunE: func(cmd *cobra.Command, _ []string) error {
			gen, err := seed.New(spec)
			if err != nil {
				return err
			}
			nc, err := auth.connect(url, "fieldsync-seed")
			if err != nil {
				return err
			}
			defer nc.Close()
			c, err := natsjs.NewClient(nc)
			if err != nil {
				return err
			}
			start := time.Now()
			n, err := c.Publisher().PublishAll(cmd.Context(), gen.Next, 4000)
			el := time.Since(start)
			fmt.Fprintf(cmd.OutOrStdout(), "seeded %d records into org unit %s in %s (%.0f/s)\n", n, spec.Org, el.Round(time.Millisecond), float64(n)/el.Seconds())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Org, "org", "", "org unit (required)")
	f.IntVar(&spec.Events, "events", 0, "records in the events channel")
	f.IntVar(&spec.Admin, "admin", 0, "records in the admin channel")
	f.IntVar(&spec.Documents, "documents", 0, "document metadata records")
	f.IntVar(&spec.BodySize, "body-size", 300, "approximate body size in bytes")
	f.Int64Var(&spec.Seed, "seed", 1, "random seed (same seed, same records)")
	f.StringVar(&url, "url", "nats://127.0.0.1:4222", "broker NATS URL")
	auth.register(cmd)
	cmd.MarkFlagRequired("org")
	return cmd
}
