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
	var orgs []string
	var url string
	var auth toolAuth
	cmd := &cobra.Command{
		Use:   "seed --org U[,U...] --events N --admin N --documents N",
		Short: "Publish synthetic records to a running broker",
		RunE: func(cmd *cobra.Command, _ []string) error {
			gens := make([]*seed.Generator, len(orgs))
			for i, org := range orgs {
				s := spec
				s.Org = org
				var err error
				if gens[i], err = seed.New(s); err != nil {
					return err
				}
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
			for i, gen := range gens {
				start := time.Now()
				n, err := c.Publisher().PublishAll(cmd.Context(), gen.Next, 4000)
				el := time.Since(start)
				fmt.Fprintf(cmd.OutOrStdout(), "seeded %d records into org unit %s in %s (%.0f/s)\n", n, orgs[i], el.Round(time.Millisecond), float64(n)/el.Seconds())
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&orgs, "org", nil, "org units, one after another (comma separated; required)")
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
