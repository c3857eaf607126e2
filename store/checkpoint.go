package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/events"
)

// Checkpoint is what a device has applied of one (unit, channel).
type Checkpoint struct {
	Unit    string         `json:"org_unit"`
	Channel events.Channel `json:"channel"`
	// LastSeq is the last stream sequence applied (or rejected).
	LastSeq uint64 `json:"last_seq"`
	// SnapshotDone is set once the initial latest-version load finished.
	SnapshotDone bool `json:"snapshot_done"`
	// Applied and Rejected count the changes applied and messages rejected
	// over the checkpoint's life.
	Applied   int64     `json:"applied"`
	Rejected  int64     `json:"rejected"`
	UpdatedAt time.Time `json:"updated_at"`
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func readCheckpoint(ctx context.Context, q queryer, unit string, ch events.Channel) (Checkpoint, error) {
	cp, _, err := readCheckpointFrom(ctx, q, "checkpoints", unit, ch)
	return cp, err
}

// readCheckpointFrom reads (unit, ch) from table (checkpoints or
// staged_checkpoints) and reports whether the row exists.
func readCheckpointFrom(ctx context.Context, q queryer, table, unit string, ch events.Channel) (Checkpoint, bool, error) {
	cp := Checkpoint{Unit: unit, Channel: ch}
	var last, at int64
	err := q.QueryRowContext(ctx, `SELECT last_seq, snapshot_done, applied, rejected, updated_at FROM `+table+`
		WHERE org_unit = ? AND channel = ?`, unit, string(ch)).Scan(&last, &cp.SnapshotDone, &cp.Applied, &cp.Rejected, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("store: read checkpoint %s/%s: %w", unit, ch, err)
	}
	cp.LastSeq, cp.UpdatedAt = uint64(last), time.UnixMilli(at)
	return cp, true, nil
}

func advance(ctx context.Context, tx *sql.Tx, b Batch, cp Checkpoint, applied, rejected int) error {
	return advanceIn(ctx, tx, "checkpoints", b, cp, applied, rejected)
}

func advanceIn(ctx context.Context, tx *sql.Tx, table string, b Batch, cp Checkpoint, applied, rejected int) error {
	last := max(cp.LastSeq, b.LastSeq)
	_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (org_unit, channel, last_seq, snapshot_done, applied, rejected, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_unit, channel) DO UPDATE SET last_seq = excluded.last_seq,
			snapshot_done = max(snapshot_done, excluded.snapshot_done),
			applied = excluded.applied, rejected = excluded.rejected, updated_at = excluded.updated_at`,
		b.Unit, string(b.Channel), int64(last), b.SnapshotDone || cp.SnapshotDone, cp.Applied+int64(applied), cp.Rejected+int64(rejected), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("store: advance checkpoint %s/%s: %w", b.Unit, b.Channel, err)
	}
	return nil
}

// Checkpoint returns the checkpoint of (unit, ch); a zero one if the device
// never read it.
func (db *DB) Checkpoint(ctx context.Context, unit string, ch events.Channel) (Checkpoint, error) {
	return readCheckpoint(ctx, db.reader, unit, ch)
}

// Checkpoints returns every checkpoint, ordered by unit and channel.
func (db *DB) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT org_unit, channel, last_seq, snapshot_done, applied, rejected, updated_at
		FROM checkpoints ORDER BY org_unit, channel`)
	if err != nil {
		return nil, fmt.Errorf("store: checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		var cp Checkpoint
		var last, at int64
		if err := rows.Scan(&cp.Unit, &cp.Channel, &last, &cp.SnapshotDone, &cp.Applied, &cp.Rejected, &at); err != nil {
			return nil, fmt.Errorf("store: checkpoints: %w", err)
		}
		cp.LastSeq, cp.UpdatedAt = uint64(last), time.UnixMilli(at)
		out = append(out, cp)
	}
	return out, rows.Err()
}
