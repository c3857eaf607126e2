package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrNothingToApply: no completed download is staged.
var ErrNothingToApply = errors.New("store: no updates to apply")

// MarkStagingReady records that the running staged download is complete:
// it becomes the download Apply makes live (together with an earlier
// completed one still waiting, which it continues). It returns false (and
// drops the empty staging) when nothing staged waits for Apply, so there
// is nothing to apply.
func (db *DB) MarkStagingReady(ctx context.Context, now time.Time) (bool, error) {
	ready := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		g, err := readGens(ctx, tx)
		if err != nil {
			return err
		}
		var rows bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM staged WHERE `+inChannels+` AND gen > ?)`, g.applied).Scan(&rows); err != nil {
			return err
		}
		if !rows {
			// Only positions moved (rejected messages, nothing for the view):
			// make them live at once.
			if err := promoteCheckpoints(ctx, tx, max(g.staging, g.ready)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `DELETE FROM meta WHERE key IN (?, ?)`, metaStagingReady, metaReadyGen)
			return err
		}
		ready = true
		if err := setMeta(ctx, tx, metaReadyGen, max(g.staging, g.ready)); err != nil {
			return err
		}
		if metaTimeIn(ctx, tx, metaStagingReady).IsZero() {
			return setMeta(ctx, tx, metaStagingReady, now.UnixMilli())
		}
		return nil
	})
	return ready, err
}

// promoteCheckpoints makes the staged positions of generations up to gen
// the live checkpoints (the newest one of each (unit, channel)).
func promoteCheckpoints(ctx context.Context, tx *sql.Tx, gen int64) error {
	for _, q := range []string{`INSERT OR REPLACE INTO checkpoints (org_unit, channel, last_seq, snapshot_done, applied, rejected, updated_at)
		SELECT org_unit, channel, last_seq, snapshot_done, applied, rejected, updated_at FROM staged_checkpoints s
		WHERE gen = (SELECT max(gen) FROM staged_checkpoints n WHERE n.org_unit = s.org_unit AND n.channel = s.channel AND n.gen <= ?1)`,
		`DELETE FROM staged_checkpoints WHERE gen <= ?1`} {
		if _, err := tx.ExecContext(ctx, q, gen); err != nil {
			return fmt.Errorf("store: promote checkpoints: %w", err)
		}
	}
	return nil
}

// ApplyStaged makes the last completed staged download live in one
// transaction: it raises applied_gen to its generation (the live view
// starts reading its rows) and makes its staged positions the checkpoints.
// A download still running stays staged in its own generation, its
// positions with it. Besides counting the changes it writes a few meta
// rows and positions, however many changes are staged. A crash before its
// commit leaves the old state and the staging intact. It returns how many records changed, and fails with
// [ErrNothingToApply] when no completed download waits.
func (db *DB) ApplyStaged(ctx context.Context, now time.Time) (int, error) {
	n := 0
	err := db.tx(ctx, func(tx *sql.Tx) error {
		g, err := readGens(ctx, tx)
		if err != nil {
			return err
		}
		if !g.readyWaits() || metaTimeIn(ctx, tx, metaStagingReady).IsZero() {
			return ErrNothingToApply
		}
		if n, err = countReady(ctx, tx, g); err != nil {
			return err
		}
		if err := setMeta(ctx, tx, metaAppliedGen, g.ready); err != nil {
			return err
		}
		if err := promoteCheckpoints(ctx, tx, g.ready); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM meta WHERE key IN (?, ?)`, metaStagingReady, metaReadyGen); err != nil {
			return err
		}
		return setMeta(ctx, tx, metaLastApplied, now.UnixMilli())
	})
	return n, err
}

// MergeApplied folds applied staged rows into the channel tables, at most
// chunk rows per transaction, until none are left, and returns how many.
// Each chunk moves rows atomically, so the live view is the same before
// and after every commit. A chunk ends early, after the row in progress,
// when another write waits for the database's single writer: a local
// write made during a long merge waits for one row, not for the chunk.
func (db *DB) MergeApplied(ctx context.Context, chunk int) (int, error) {
	total := 0
	for {
		n, err := db.mergeChunk(ctx, chunk)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// mergePage is how many staged rows a merge reads at a time, so that a
// chunk cut short by a waiting write has read little it did not merge.
const mergePage = 64

func (db *DB) mergeChunk(ctx context.Context, chunk int) (int, error) {
	n := 0

	err := db.tx(ctx, func(tx *sql.Tx) error {
		// A write that starts waiting from now on makes the chunk yield.
		waits := db.writer.Stats().WaitCount
		g, err := readGens(ctx, tx)
		if err != nil {
			return err
		}
		var after *stagedRow
		for n < chunk {
			page, err := appliedPage(ctx, tx, g.applied, after, min(mergePage, chunk-n))
			if err != nil || len(page) == 0 {
				return err
			}
			for i := range page {
				if err := mergeRows(ctx, tx, page[i:i+1]); err != nil {
					return err
				}
				n++
				if db.commit.waiting() || db.writer.Stats().WaitCount != waits {
					return nil
				}
			}
			after = &page[len(page)-1]
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("store: merge applied changes: %w", err)
	}
	return n, nil
}

// appliedPage reads up to limit applied staged rows, oldest generation
// first (a record applied in two generations ends at the newer one's
// state), after the row at after unless nil.
func appliedPage(ctx context.Context, tx *sql.Tx, applied int64, after *stagedRow, limit int) ([]stagedRow, error) {
	cond, args := "", []any{applied}
	if after != nil {
		a := after.addr
		cond = ` AND (channel, gen, org_unit, kind, record_id) > (?, ?, ?, ?, ?)`
		args = append(args, string(a.Channel), after.gen, a.OrgUnit, a.Kind, a.RecordID)
	}
	rows, err := tx.QueryContext(ctx, `SELECT channel, org_unit, kind, record_id, gen, version, event_id, origin, updated_at, deleted, body
		FROM staged WHERE `+inChannels+` AND gen <= ?`+cond+` ORDER BY channel, gen, org_unit, kind, record_id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	return scanStaged(rows)
}

// DropStaging discards every staged download not applied, completed or
// not, and then merges what was applied (blocking sync does not stage).
// Discarding first closes the door on an Apply: none can add applied rows
// under a blocking download's live changes afterwards.
func (db *DB) DropStaging(ctx context.Context) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		g, err := readGens(ctx, tx)
		if err != nil {
			return err
		}
		if err := discardAbove(ctx, tx, g.applied); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM meta WHERE key IN (?, ?)`, metaStagingReady, metaReadyGen)
		return err
	})
	if err != nil {
		return err
	}
	_, err = db.MergeApplied(ctx, 5000)
	return err
}
