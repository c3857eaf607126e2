package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

type applyOpts struct {
	records    int
	changes    int
	bodySize   int
	chunk      int
	readRate   int
	writeRate  int
	baseline   time.Duration
	dir        string
	keep       bool
	cpuProfile string
}

func newApplyCmd() *cobra.Command {
	var o applyOpts
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Apply of a staged download (refresh mode): the user's wait, the background merge, and reader latency meanwhile",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runApply(cmd.Context(), o) },
	}
	cmd.Flags().IntVar(&o.records, "records", 1_000_000, "live records in the events channel")
	cmd.Flags().IntVar(&o.changes, "changes", 100_000, "staged changes (80% updates, 16% inserts, 4% deletes)")
	cmd.Flags().IntVar(&o.bodySize, "body-size", 300, "approximate body size in bytes")
	cmd.Flags().IntVar(&o.chunk, "chunk", agent.MergeChunk, "rows per merge transaction (what the agent's merger passes)")
	cmd.Flags().IntVar(&o.readRate, "read-rate", 100, "reads per second the app makes meanwhile, open loop (0: back to back)")
	cmd.Flags().IntVar(&o.writeRate, "write-rate", 20, "edits per second the app makes meanwhile, open loop")
	cmd.Flags().DurationVar(&o.baseline, "baseline", 3*time.Second, "how long the reader runs before the apply (reference latency)")
	cmd.Flags().StringVar(&o.dir, "dir", "", "working directory (default: a temporary one)")
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep the working directory")
	cmd.Flags().StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the apply and merge to this file")
	return cmd
}

// stagingWindow is the resume window passed to BeginStaging; the bench
// stages in one go, so its value does not matter.
const stagingWindow = time.Hour

func runApply(ctx context.Context, o applyOpts) error {
	if o.records < len(benchKinds) || o.changes < 25 {
		return fmt.Errorf("need --records >= %d and --changes >= 25", len(benchKinds))
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "fsbench-apply-")
		if err != nil {
			return err
		}
		o.dir = d
	}
	if !o.keep {
		defer os.RemoveAll(o.dir)
	}
	data := newApplyData(o.records, o.changes, o.bodySize)
	fmt.Printf("apply benchmark: %d records in %s, %d staged changes (%d updates, %d inserts, %d deletes), ~%d B bodies, merge chunks of %d\n",
		o.records, events.ChannelEvents, o.changes, data.updates, data.inserts, data.deletes, o.bodySize, o.chunk)

	raw, err := measureRawApply(ctx, filepath.Join(o.dir, "raw.db"), data)
	if err != nil {
		return fmt.Errorf("raw sqlite: %w", err)
	}

	dev, err := openApplyDevice(ctx, filepath.Join(o.dir, "device"))
	if err != nil {
		return err
	}
	defer dev.close()
	db := dev.agent.DB()
	start := time.Now()
	if err := loadDevice(ctx, db, data); err != nil {
		return err
	}
	fmt.Printf("  device store bulk loaded with %d records in %s\n", o.records, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if err := stageChanges(ctx, db, data); err != nil {
		return err
	}
	fmt.Printf("  %d changes staged in %s\n", o.changes, time.Since(start).Round(time.Millisecond))

	if err := dev.serve(ctx); err != nil {
		return err
	}
	res, err := measureApply(ctx, dev, data, o)
	if err != nil {
		return err
	}
	if err := checkApplied(ctx, db, data); err != nil {
		return err
	}
	reportApply(o, raw, res)
	return nil
}

// loadDevice bulk loads the base records into the events table, as an
// initial sync does, and marks the snapshot done.
func loadDevice(ctx context.Context, db *store.DB, d *applyData) error {
	ch := events.ChannelEvents
	ok, err := db.BeginBulk(ctx, ch)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("events table not empty")
	}
	const batch = 20_000
	for i := 0; i < d.records; i += batch {
		end := min(i+batch, d.records)
		changes := d.baseChanges(i, end)
		if _, err := db.Apply(ctx, store.Batch{Unit: benchUnit, Channel: ch, Bulk: true,
			Batch: projections.Batch{Changes: changes, LastSeq: uint64(end)}}); err != nil {
			return err
		}
	}
	if err := db.EndBulk(ctx, ch); err != nil {
		return err
	}
	_, err = db.Apply(ctx, store.Batch{Unit: benchUnit, Channel: ch, SnapshotDone: true,
		Batch: projections.Batch{LastSeq: uint64(d.records)}})
	return err
}

// stageChanges downloads the changes into staging in batches of 5,000 and
// marks the download complete.
func stageChanges(ctx context.Context, db *store.DB, d *applyData) error {
	if _, _, err := db.BeginStaging(ctx, stagingWindow, time.Now()); err != nil {
		return err
	}
	const batch = 5000
	staged := 0
	for i := 0; i < len(d.changes); i += batch {
		b := d.changes[i:min(i+batch, len(d.changes))]
		n, err := db.Apply(ctx, store.Batch{Unit: benchUnit, Channel: events.ChannelEvents, Stage: true,
			Batch: projections.Batch{Changes: b, LastSeq: b[len(b)-1].Seq}})
		if err != nil {
			return err
		}
		staged += n
	}
	if staged != len(d.changes) {
		return fmt.Errorf("staged %d of %d changes", staged, len(d.changes))
	}
	ready, err := db.MarkStagingReady(ctx, time.Now())
	if err != nil {
		return err
	}
	if !ready {
		return fmt.Errorf("staging not ready after %d changes", staged)
	}
	return nil
}

type applyResult struct {
	applied int
	apply   time.Duration // POST /v1/apply answered
	wait    time.Duration // POST /v1/apply + the first read that sees the new state
	probes  int           // reads until the new state was seen
	merged  int
	merge   time.Duration
	app     *appSide
}

// measureApply runs the app side, lets it settle for o.baseline, then
// applies (POST /v1/apply, as the user does) and merges while it keeps
// reading and writing.
func measureApply(ctx context.Context, dev *applyDevice, d *applyData, o applyOpts) (applyResult, error) {
	var res applyResult
	var phase atomic.Int32
	app := startAppSide(ctx, dev.api, d, o.readRate, o.writeRate, &phase)
	defer app.stop()
	select {
	case <-time.After(o.baseline):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
		defer pprof.StopCPUProfile()
	}

	probe := store.Query{Channel: events.ChannelEvents, Unit: benchUnit, Kind: d.probe.Addr.Kind, Limit: 1}
	phase.Store(phaseApply)
	start := time.Now()
	rep, err := dev.api.Apply(ctx)
	res.apply = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	res.applied = rep.Changes
	for {
		res.probes++
		recs, err := dev.api.Records(ctx, probe)
		if err != nil {
			return res, fmt.Errorf("probe: %w", err)
		}
		if len(recs) == 1 && recs[0].RecordID == d.probe.Addr.RecordID && recs[0].Version == d.probe.Seq {
			break
		}
		if time.Since(start) > time.Minute {
			return res, fmt.Errorf("probe %s still not at version %d a minute after the apply: %+v", d.probe.Addr.RecordID, d.probe.Seq, recs)
		}
	}
	res.wait = time.Since(start)

	// What the agent's merger runs after an Apply.
	start = time.Now()
	res.merged, err = dev.agent.DB().MergeApplied(ctx, o.chunk)
	res.merge = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("merge: %w", err)
	}
	phase.Store(phaseAfter)
	if err := app.stop(); err != nil {
		return res, fmt.Errorf("app side: %w", err)
	}
	res.app = app
	return res, nil
}

// checkApplied verifies the device ends in the new state with nothing
// left in staging.
func checkApplied(ctx context.Context, db *store.DB, d *applyData) error {
	st, err := db.StagingState(ctx)
	if err != nil {
		return err
	}
	if st.Changes != 0 || st.Merging != 0 {
		return fmt.Errorf("after the merge staging holds %d unapplied and %d unmerged changes", st.Changes, st.Merging)
	}
	n, err := db.Count(ctx, store.Query{Channel: events.ChannelEvents, Unit: benchUnit})
	if err != nil {
		return err
	}
	if want := d.records + d.inserts - d.deletes; n != want {
		return fmt.Errorf("after the merge the device holds %d records, want %d", n, want)
	}
	cp, err := db.Checkpoint(ctx, benchUnit, events.ChannelEvents)
	if err != nil {
		return err
	}
	if want := uint64(d.records + len(d.changes)); cp.LastSeq != want || !cp.SnapshotDone {
		return fmt.Errorf("checkpoint %+v, want last_seq %d and snapshot done", cp, want)
	}
	return nil
}

func reportApply(o applyOpts, raw rawApply, r applyResult) {
	rawRate := float64(raw.rows) / raw.seconds
	mergeRate := float64(r.merged) / r.merge.Seconds()
	readBase, reads, slowRead := r.app.s.split("read")
	writeBase, writes, slowWrite := r.app.s.split("write")
	fmt.Println()
	fmt.Printf("(a) raw SQLite, the same %d changes in one transaction + wal_checkpoint: %8.0f rows/s  (%.2f s)\n",
		raw.rows, rawRate, raw.seconds)
	fmt.Printf("(b) POST /v1/apply: %.1f ms for %d changes; first read after it sees the new state (%d read)\n",
		ms(r.apply), r.applied, r.probes)
	fmt.Printf("(c) user waits %.1f ms                                          target <= 1000 ms  %s\n",
		ms(r.wait), verdict(r.wait <= time.Second))
	fmt.Printf("(d) background merge: %d rows in %.2f s = %.0f rows/s, %.2f of (a) (%.1fx its time)\n",
		r.merged, r.merge.Seconds(), mergeRate, mergeRate/rawRate, r.merge.Seconds()/raw.seconds)
	fmt.Printf("(e) reader (GET /v1/records, %s) during apply+merge: %d calls, p50 %.1f ms, p99 %.1f ms\n",
		readMode(o.readRate), len(reads), ms(percentile(reads, 50)), ms(percentile(reads, 99)))
	fmt.Printf("(f) worst reader latency %.1f ms (%s)                 target <= 50 ms    %s\n",
		ms(percentile(reads, 100)), slowRead, verdict(percentile(reads, 100) <= 50*time.Millisecond))
	p99 := percentile(writes, 99)
	fmt.Printf("(g) write -> visible (POST /v1/records, then GET shows it) during apply+merge, %d/s open loop: %d writes, p50 %.1f ms, p99 %.1f ms, worst %.1f ms (%s)   target p99 <= 50 ms  %s\n",
		o.writeRate, len(writes), ms(percentile(writes, 50)), ms(p99), ms(percentile(writes, 100)), slowWrite, verdict(len(writes) > 0 && p99 <= 50*time.Millisecond))
	_, posts, _ := r.app.s.split("post")
	fmt.Printf("    of which POST /v1/records answered: p50 %.1f ms, p99 %.1f ms, worst %.1f ms\n",
		ms(percentile(posts, 50)), ms(percentile(posts, 99)), ms(percentile(posts, 100)))
	fmt.Printf("    reference, the same app side for %s before the apply: reader %d calls, p50 %.1f ms, p99 %.1f ms, worst %.1f ms; writes %d, p50 %.1f ms, p99 %.1f ms\n",
		o.baseline, len(readBase), ms(percentile(readBase, 50)), ms(percentile(readBase, 99)), ms(percentile(readBase, 100)),
		len(writeBase), ms(percentile(writeBase, 50)), ms(percentile(writeBase, 99)))
}

func readMode(rate int) string {
	if rate <= 0 {
		return "back to back"
	}
	return fmt.Sprintf("%d/s open loop", rate)
}
