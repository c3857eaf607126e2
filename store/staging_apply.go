package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/events"
)

// ErrNothingToApply: no completed download is staged.
var ErrNothingToApply = errors.New("store: no updates to apply")

// MarkStagingReady records that the staged download is complete. It
// returns false (and drops the empty staging) when the download brought
// nothing new, so there is nothing to apply.
func (db *DB) MarkStagingReady(ctx context.Context, now time.Time) (bool, error) {
	ready := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, applied, err := db.gens(ctx, tx)
		if err != nil {
			return err
		}
		var rows, moved int
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM staged WHERE gen > ?),
			(SELECT count(*) FROM staged_checkpoints s LEFT JOIN checkpoints c ON c.org_unit = s.org_unit AND c.channel = s.channel
			 WHERE c.last_seq IS NULL OR s.last_seq != c.last_seq)`, applied).Scan(&rows, &moved); err != nil {
			return err
		}
		if rows == 0 {
			// Only positions moved (rejected messages, nothing for the view):
			// make them live at once.
			return promoteCheckpoints(ctx, tx)
		}
		ready = true
		if db.metaTimeTx(ctx, tx, metaStagingReady).IsZero() {
			return setMeta(ctx, tx, metaStagingReady, now.UnixMilli())
		}
		return nil
	})
	return ready, err
}

func promoteCheckpoints(ctx context.Context, tx *sql.Tx) error {
	for _, q := range []string{`INSERT OR REPLACE INTO checkpoints (org_unit, channel, last_seq, snapshot_done, applied, rejected, updated_at)
		SELECT org_unit, channel, last_seq, snapshot_done, applied, rejected, updated_at FROM staged_checkpoints`,
		`DELETE FROM staged_checkpoints`} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("store: promote checkpoints: %w", err)
		}
	}
	return nil
}

// ApplyStaged makes the completed staged download live in one transaction:
// it raises applied_gen (the live view starts reading the staged rows) and
// makes the staged positions the checkpoints. Its cost does not depend on
// how many changes are staged. A crash before its commit leaves the old
// state and the staging intact. It returns how many changes went live.
func (db *DB) ApplyStaged(ctx context.Context, now time.Time) (int, error) {
	n := 0
	err := db.tx(ctx, func(tx *sql.Tx) error {
		gen, applied, err := db.gens(ctx, tx)
		if err != nil {
			return err
		}
		if db.metaTimeTx(ctx, tx, metaStagingReady).IsZero() || gen <= applied {
			return ErrNothingToApply
		}
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM staged WHERE gen > ?`, applied).Scan(&n); err != nil {
			return err
		}
		if err := setMeta(ctx, tx, metaAppliedGen, gen); err != nil {
			return err
		}
		if err := promoteCheckpoints(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM meta WHERE key IN (?, ?)`, metaStagingReady, metaStagingTouched); err != nil {
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
		// A writer that starts waiting from now on makes the chunk yield.
		waits := db.writer.Stats().WaitCount
		_, applied, err := db.gens(ctx, tx)
		if err != nil {
			return err
		}
		var after *events.Address
		for n < chunk {
			page, err := appliedPage(ctx, tx, applied, after, min(mergePage, chunk-n))
			if err != nil || len(page) == 0 {
				return err
			}
			for i := range page {
				if err := mergeRows(ctx, tx, page[i:i+1]); err != nil {
					return err
				}
				n++
				if db.writer.Stats().WaitCount != waits {
					return nil
				}
			}
			after = &page[len(page)-1].addr
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("store: merge applied changes: %w", err)
	}
	return n, nil
}

// appliedPage reads up to limit applied staged rows in key order, after
// the row at after unless nil.
func appliedPage(ctx context.Context, tx *sql.Tx, applied int64, after *events.Address, limit int) ([]stagedRow, error) {
	cond, args := "", []any{applied}
	if after != nil {
		cond = ` AND (channel, org_unit, kind, record_id) > (?, ?, ?, ?)`
		args = append(args, string(after.Channel), after.OrgUnit, after.Kind, after.RecordID)
	}
	rows, err := tx.QueryContext(ctx, `SELECT channel, org_unit, kind, record_id, version, event_id, origin, updated_at, deleted, body
		FROM staged WHERE gen <= ?`+cond+` ORDER BY channel, org_unit, kind, record_id LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	return scanStaged(rows)
}

// DropStaging merges what was applied and discards any staged download not
// applied (blocking sync does not stage).
func (db *DB) DropStaging(ctx context.Context) error {
	if _, err := db.MergeApplied(ctx, 5000); err != nil {
		return err
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		_, applied, err := db.gens(ctx, tx)
		if err != nil {
			return err
		}
		return discardStaging(ctx, tx, applied)
	})
}
