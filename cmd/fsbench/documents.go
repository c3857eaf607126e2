package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/broker"
)

// documentsOpts are the document download benchmark's flags.
type documentsOpts struct {
	largeMB int           // size of the large document, MB (10^6 bytes)
	small   int           // number of small documents
	smallKB int           // size of each small document, KB (10^3 bytes)
	runs    int           // repetitions; the median is reported
	poll    time.Duration // how often the agent's status is read
}

func newDocumentsCmd() *cobra.Command {
	var o documentsOpts
	cmd := &cobra.Command{
		Use:   "documents",
		Short: "Document download through the agent (one large, many small) next to raw object-store gets of the same objects",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runDocuments(cmd.Context(), o) },
	}
	cmd.Flags().IntVar(&o.largeMB, "large-mb", 200, "size of the large document in MB (10^6 bytes)")
	cmd.Flags().IntVar(&o.small, "small", 1000, "number of small documents")
	cmd.Flags().IntVar(&o.smallKB, "small-kb", 100, "size of each small document in KB (10^3 bytes)")
	cmd.Flags().IntVar(&o.runs, "runs", 3, "runs of each measurement; the median is reported")
	cmd.Flags().DurationVar(&o.poll, "poll", 5*time.Millisecond, "how often GET /v1/status is read to see a download complete (at least; 1/200 of the wait so far when longer)")
	return cmd
}

// docRun is one run's elapsed times: raw gets to io.Discard, raw gets to
// durable files (the same step as the agent's) and through the agent.
type docRun struct {
	rawLarge, rawSmall     time.Duration
	fileLarge, fileSmall   time.Duration
	agentLarge, agentSmall time.Duration
}

// runDocuments publishes the documents through the publish API on an
// embedded broker with auth on, then, o.runs times: (a) reads them with
// nats.go's object store Get over TCP (the raw rate), (b) has a fresh
// agent process download them through its local HTTP API, the large one
// alone, then the small ones with Download All.
func runDocuments(ctx context.Context, o documentsOpts) error {
	if o.largeMB < 1 || o.small < 1 || o.smallKB < 1 || o.runs < 1 {
		return fmt.Errorf("need --large-mb, --small, --small-kb and --runs >= 1")
	}
	dir, err := os.MkdirTemp("", "fsbench-documents-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := broker.Config{DataDir: filepath.Join(dir, "broker"), HTTPAddr: "127.0.0.1:0", OrgUnits: []string{benchUnit}}
	cfg.NATS.Port = -1
	b, err := broker.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer b.Close(context.Background())
	fmt.Printf("documents benchmark: one %d MB document and %d × %d KB documents (MB = 10^6 bytes) in org unit %s's bucket; "+
		"broker embedded with auth on, every client over TCP loopback; each figure is the median of %d runs\n",
		o.largeMB, o.small, o.smallKB, benchUnit, o.runs)
	start := time.Now()
	set, err := publishDocuments(ctx, b, o)
	if err != nil {
		return err
	}
	fmt.Printf("  published through the publish API in %s\n", time.Since(start).Round(time.Millisecond))
	// One untimed pass first: the broker's own writes of the blocks settle
	// and every run reads the same warm blocks.
	if _, err := rawObjectGets(ctx, b, slices.Concat(set.large, set.small), ""); err != nil {
		return fmt.Errorf("warm-up gets: %w", err)
	}
	runs := make([]docRun, o.runs)
	for i := range runs {
		if runs[i], err = documentsRun(ctx, b, dir, set, i, o.poll); err != nil {
			return err
		}
		r := runs[i]
		fmt.Printf("  run %d: large: raw %.1f, raw to file %.1f, agent %.1f MB/s; small: raw %.1f, raw to files %.1f, agent %.1f MB/s\n", i+1,
			mbps(set.largeBytes(), r.rawLarge), mbps(set.largeBytes(), r.fileLarge), mbps(set.largeBytes(), r.agentLarge),
			mbps(set.smallBytes(), r.rawSmall), mbps(set.smallBytes(), r.fileSmall), mbps(set.smallBytes(), r.agentSmall))
	}
	reportDocuments(set, runs, o)
	return nil
}

// documentsRun is one run: the raw gets of the large and the small
// objects to io.Discard and to durable files in dir (the file system the
// agent writes to), then the same through a fresh agent (run names its
// device).
func documentsRun(ctx context.Context, b *broker.Broker, dir string, set *docSet, run int, poll time.Duration) (docRun, error) {
	var r docRun
	var err error
	files := filepath.Join(dir, "raw-files")
	if r.rawLarge, err = rawObjectGets(ctx, b, set.large[:1], ""); err != nil {
		return r, fmt.Errorf("raw get of the large document: %w", err)
	}
	if r.fileLarge, err = rawObjectGets(ctx, b, set.large[:1], files); err != nil {
		return r, fmt.Errorf("raw get of the large document to a file: %w", err)
	}
	if r.rawSmall, err = rawObjectGets(ctx, b, set.small, ""); err != nil {
		return r, fmt.Errorf("raw gets of the small documents: %w", err)
	}
	if r.fileSmall, err = rawObjectGets(ctx, b, set.small, files); err != nil {
		return r, fmt.Errorf("raw gets of the small documents to files: %w", err)
	}
	r.agentLarge, r.agentSmall, err = agentDownloads(ctx, b, dir, set, fmt.Sprintf("docdev%d", run+1), poll)
	return r, err
}

// mbps is n bytes in d as MB/s (10^6 bytes).
func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// median returns the median of d (the lower middle one of an even count).
func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// reportDocuments prints the medians: the raw rates (to io.Discard and to
// durable files), the agent's rates and their ratios, the large file's
// against the target >= 0.8 of the raw get that does the agent's step
// (lands the document as a durable file).
func reportDocuments(set *docSet, runs []docRun, o documentsOpts) {
	pick := func(f func(docRun) time.Duration) time.Duration {
		d := make([]time.Duration, len(runs))
		for i, r := range runs {
			d[i] = f(r)
		}
		return median(d)
	}
	L, S := set.largeBytes(), set.smallBytes()
	rawL := mbps(L, pick(func(r docRun) time.Duration { return r.rawLarge }))
	fileL := mbps(L, pick(func(r docRun) time.Duration { return r.fileLarge }))
	agL := mbps(L, pick(func(r docRun) time.Duration { return r.agentLarge }))
	rawSD := pick(func(r docRun) time.Duration { return r.rawSmall })
	fileSD := pick(func(r docRun) time.Duration { return r.fileSmall })
	agSD := pick(func(r docRun) time.Duration { return r.agentSmall })
	docsPerS := func(d time.Duration) float64 { return float64(o.small) / d.Seconds() }
	fmt.Println()
	fmt.Printf("(a) raw object-store get (nats.go jetstream ObjectStore.Get, digest verified by Get, TCP, one Get after another), median of %d:\n", len(runs))
	fmt.Printf("    to io.Discard (the transport's bound, nothing stored):   large %8.1f MB/s   small %8.1f MB/s (%.0f documents/s)\n",
		rawL, mbps(S, rawSD), docsPerS(rawSD))
	fmt.Printf("    to a durable file (io.Copy as GetFile does, fsync, rename): large %8.1f MB/s   small %8.1f MB/s (%.0f documents/s)\n",
		fileL, mbps(S, fileSD), docsPerS(fileSD))
	fmt.Printf("(b) through the agent (own process; POST /v1/documents/{id}/download, then POST /v1/documents/download-all for the small ones,\n"+
		"    until GET /v1/status counts them downloaded, read every %s or 1/200 of the wait so far if longer; then checked in GET /v1/documents),\n"+
		"    fresh agent and data dir each run, median of %d:\n", o.poll, len(runs))
	fmt.Printf("large %d MB: agent %.1f MB/s, raw get to a durable file %.1f MB/s: ratio %.2f   target >= 0.80  %s\n",
		o.largeMB, agL, fileL, agL/fileL, verdict(agL/fileL >= 0.8))
	fmt.Printf("    (raw get to io.Discard %.1f MB/s: ratio %.2f; no document is stored that way)\n", rawL, agL/rawL)
	fmt.Printf("small %d × %d KB: agent %.1f MB/s (%.0f documents/s), raw gets to durable files %.1f MB/s: ratio %.2f   (no target)\n",
		o.small, o.smallKB, mbps(S, agSD), docsPerS(agSD), mbps(S, fileSD), mbps(S, agSD)/mbps(S, fileSD))
}
