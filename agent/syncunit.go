package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// fetched is one folded batch on its way from the broker to the store.
type fetched struct {
	batch    projections.Batch
	received int
	pending  uint64
	caughtUp bool
	bulk     bool // part of the initial snapshot of a bulk-mode table
}

// reopenLimit bounds how often one (unit, channel) sync reopens its
// cursor after changes were lost in flight.
const reopenLimit = 5

// syncUnit reads one (unit, channel) until caught up. When changes were
// lost in flight (the connection dropped, the broker node was lost and
// the client moved to another) it reopens the cursor from the local
// checkpoint, which every applied batch moved, and goes on: the sync
// continues on another node with nothing skipped.
func (s *Syncer) syncUnit(ctx context.Context, unit string, ch events.Channel, bulk *bool, r *Report) error {
	for attempt := 1; ; attempt++ {
		err := s.syncUnitOnce(ctx, unit, ch, bulk, r)
		if !errors.Is(err, natsjs.ErrDeliveryGap) || attempt == reopenLimit || ctx.Err() != nil {
			return err
		}
		s.log.Info("changes lost in flight; reading again from the checkpoint", "unit", unitName(unit), "channel", ch, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
}

// syncUnitOnce reads one (unit, channel) through one cursor. Reading and
// decoding run in one goroutine, applying in another, so the network and
// SQLite overlap; at most a few batches are in flight, which bounds
// memory.
func (s *Syncer) syncUnitOnce(ctx context.Context, unit string, ch events.Channel, bulk *bool, r *Report) error {
	cp, err := s.db.Checkpoint(ctx, unit, ch)
	if s.staging.Load() {
		cp, err = s.db.StagingCheckpoint(ctx, unit, ch)
	}
	if err != nil {
		return err
	}
	// A (unit, channel) never loaded has nothing to show yet: its initial
	// snapshot goes straight into the live view, even in refresh mode.
	stage := s.staging.Load() && cp.SnapshotDone
	durable, err := natsjs.DurableName(s.cfg.DeviceID, ch)
	if err != nil {
		return err
	}
	cur, err := s.client.OpenCursor(ctx, natsjs.CursorSpec{Unit: unit, Channel: ch, Durable: durable,
		After: cp.LastSeq, Snapshot: !cp.SnapshotDone, InactiveThreshold: s.cfg.DurableInactive, StallTimeout: s.cfg.StallTimeout,
		BatchBytes: s.cfg.BatchBytes, BufferBytes: 2 * s.cfg.BatchBytes})
	if err != nil {
		return err
	}
	defer cur.Close()
	s.progress.Load().start(unit, ch, cur.Pending())
	s.log.Debug("sync unit", "unit", unitName(unit), "channel", ch, "after", cp.LastSeq, "pending", cur.Pending(), "recreated", cur.Recreated, "bulk", *bulk)
	snapshotLeft := uint64(0)
	if *bulk {
		snapshotLeft = cur.Pending()
	}
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan fetched, 2)
	g.Go(func() error {
		defer close(batches)
		return s.fetch(gctx, unit, ch, cur, snapshotLeft, batches)
	})
	g.Go(func() error { return s.applyAll(gctx, unit, ch, !cp.SnapshotDone, stage, bulk, batches, r) })
	return g.Wait()
}

func (s *Syncer) fetch(ctx context.Context, unit string, ch events.Channel, cur *natsjs.Cursor, snapshotLeft uint64, out chan<- fetched) error {
	msgs := make([]projections.Message, 0, s.cfg.BatchSize)
	for {
		max := s.cfg.BatchSize
		inSnapshot := snapshotLeft > 0
		if inSnapshot {
			max = int(min(uint64(max), snapshotLeft))
		}
		s.trace("fetch " + unitName(unit) + "/" + string(ch))
		ds, err := cur.Next(ctx, max)
		s.downloaded(ds) // received, even if the batch is cut short
		if err != nil {
			return err
		}
		msgs = msgs[:0]
		f := fetched{received: len(ds), caughtUp: cur.CaughtUp(), bulk: inSnapshot}
		for _, d := range ds {
			msgs = append(msgs, projections.Message{Subject: d.Subject, Seq: d.StreamSeq, Data: d.Data})
			f.pending = d.Pending
		}
		snapshotLeft -= min(snapshotLeft, uint64(len(ds)))
		f.batch = s.cfg.Reader().Fold(msgs)
		select {
		case out <- f:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.caughtUp {
			return nil
		}
	}
}

func (s *Syncer) applyAll(ctx context.Context, unit string, ch events.Channel, snapshot, stage bool, bulk *bool, in <-chan fetched, r *Report) error {
	for f := range in {
		if *bulk && !f.bulk && f.received > 0 {
			// Past the snapshot: changes may now repeat a record, so the
			// unique index must exist before they are applied.
			if err := s.db.EndBulk(ctx, ch); err != nil {
				return err
			}
			*bulk = false
		}
		b := store.Batch{Unit: unit, Channel: ch, Batch: f.batch, Bulk: *bulk && !stage, Stage: stage, SnapshotDone: snapshot && f.caughtUp}
		n, err := s.db.Apply(ctx, b)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		r.Applied += n
		if s.metrics != nil {
			s.metrics.Applied(string(ch), n)
		}
		r.Rejected += len(f.batch.Rejects)
		for _, rj := range f.batch.Rejects {
			s.log.Warn("sync error recorded", "unit", unitName(unit), "channel", ch, "seq", rj.Seq, "subject", rj.Subject, "code", rj.Code, "err", rj.Err)
		}
		logParked(s.log, unit, ch, f.batch.Parked, r)
		s.progress.Load().add(unit, ch, f.received, f.pending, f.caughtUp)
		if s.onBatch != nil {
			s.onBatch(unit, ch, n)
		}
	}
	return nil
}
