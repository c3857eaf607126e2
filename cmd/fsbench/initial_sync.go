package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
	"github.com/fieldsync/fieldsync/seed"
)

type initialSyncOpts struct {
	records  int
	bodySize int
	dir      string
	keep     bool
}

func newInitialSyncCmd() *cobra.Command {
	var o initialSyncOpts
	cmd := &cobra.Command{
		Use:   "initial-sync",
		Short: "Initial sync of N records (75% events, 5% admin, 20% documents) until ready on the device",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runInitialSync(cmd.Context(), o) },
	}
	cmd.Flags().IntVar(&o.records, "records", 1_000_000, "records in the org unit stream")
	cmd.Flags().IntVar(&o.bodySize, "body-size", 300, "approximate body size in bytes")
	cmd.Flags().StringVar(&o.dir, "dir", "", "working directory (default: a temporary one)")
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep the working directory")
	return cmd
}

const benchUnit = "bench"

func runInitialSync(ctx context.Context, o initialSyncOpts) error {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "fsbench-")
		if err != nil {
			return err
		}
		o.dir = d
	}
	if !o.keep {
		defer os.RemoveAll(o.dir)
	}
	srv, err := natsserver.Start(ctx, natsserver.Config{Name: "bench", Port: -1, StoreDir: filepath.Join(o.dir, "js")})
	if err != nil {
		return err
	}
	defer srv.Close(context.Background())
	hello, err := srv.Connect("fsbench-hello")
	if err != nil {
		return err
	}
	defer hello.Close()
	if _, err := natsjs.ServeHello(hello, events.LocalHello("broker")); err != nil {
		return err
	}
	spec := seed.Spec{Org: benchUnit, Events: o.records * 75 / 100, Admin: o.records * 5 / 100, BodySize: o.bodySize}
	spec.Documents = o.records - spec.Events - spec.Admin
	fmt.Printf("initial sync benchmark: %d records (%d events, %d admin, %d documents), ~%d B bodies\n",
		o.records, spec.Events, spec.Admin, spec.Documents, o.bodySize)
	if err := seedStream(ctx, srv, spec); err != nil {
		return err
	}
	raw, decoded, err := measureConsume(ctx, srv.ClientURL(), o.records)
	if err != nil {
		return err
	}
	loads, err := measureBulkLoads(ctx, o.dir, spec)
	if err != nil {
		return err
	}
	child, err := runAgentChild(ctx, srv.ClientURL(), filepath.Join(o.dir, "device"))
	if err != nil {
		return err
	}
	report(o.records, raw, decoded, loads, child)
	return nil
}

func seedStream(ctx context.Context, srv *natsserver.Server, spec seed.Spec) error {
	nc, err := srv.Connect("fsbench-seed")
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := natsjs.NewClient(nc)
	if err != nil {
		return err
	}
	if err := c.Provision(ctx, []string{benchUnit}, natsjs.StreamPolicy{}); err != nil {
		return err
	}
	if err := c.ProvisionIngest(ctx, natsjs.IngestPolicy{}); err != nil {
		return err
	}
	gen, err := seed.New(spec)
	if err != nil {
		return err
	}
	start := time.Now()
	n, err := c.Publisher().PublishAll(ctx, gen.Next, 4000)
	fmt.Printf("  seeded %d records in %s\n", n, time.Since(start).Round(time.Millisecond))
	return err
}

// childResult is what the agent child process reports.
type childResult struct {
	Records   int     `json:"records"`
	Seconds   float64 `json:"seconds"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
	Queried   int     `json:"queried"`
}

func runAgentChild(ctx context.Context, url, dir string) (childResult, error) {
	var res childResult
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, self, "agent-child", "--broker", url, "--dir", dir, "--unit", benchUnit)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("agent child: %w", err)
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("agent child output %q: %w", out, err)
	}
	res.Seconds = time.Since(start).Seconds() // wall clock including process start
	return res, nil
}

func report(n int, raw, decoded float64, loads []bulkResult, c childResult) {
	e2e := float64(c.Records) / c.Seconds
	best := loads[0]
	for _, l := range loads[1:] {
		if l.rate > best.rate {
			best = l
		}
	}
	limit := min(raw, best.rate)
	fmt.Println()
	fmt.Printf("(a) raw JetStream consume (ordered consumer over TCP, no store): %10.0f msgs/s   (with msgpack decode: %.0f msgs/s)\n", raw, decoded)
	fmt.Printf("(b) raw SQLite bulk load of the same rows (no network), the fastest of:\n")
	for _, l := range loads {
		mark := " "
		if l == best {
			mark = "*"
		}
		fmt.Printf("    %s %10.0f rows/s  %s\n", mark, l.rate, l.name)
	}
	fmt.Printf("(b) = %.0f rows/s\n", best.rate)
	fmt.Printf("(c) end to end, stream -> device store, ready to query:  %10.0f records/s  (%d records in %.2f s, %d returned by a query through the agent)\n",
		e2e, c.Records, c.Seconds, c.Queried)
	fmt.Printf("(d) (c) / min(a, b) = %.2f                                 target >= 0.50  %s\n", e2e/limit, verdict(e2e/limit >= 0.5))
	fmt.Printf("(e) agent peak memory (VmHWM) = %.0f MB                     target <= 300 MB %s\n", c.PeakRSSMB, verdict(c.PeakRSSMB <= 300))
	if c.Records != n {
		fmt.Printf("WARNING: device holds %d records, stream %d\n", c.Records, n)
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}
