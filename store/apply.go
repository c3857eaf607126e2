package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
)

// Batch is a folded run of changes of one (unit, channel) to apply together
// with the checkpoint after it.
type Batch struct {
	Unit    string
	Channel events.Channel
	projections.Batch
	// SnapshotDone marks the end of the initial (latest-version-only) load
	// of this (unit, channel); later reads are deltas.
	SnapshotDone bool
	// Bulk appends rows without conflict checks into a table in bulk mode
	// (see [DB.BeginBulk]); deletes in it concern records the device never
	// had and are skipped.
	Bulk bool
	// Stage writes the batch into the staged download instead of the live
	// view (non-blocking sync, see [DB.BeginStaging]).
	Stage bool
}

// Apply applies b and advances the (unit, channel) checkpoint in one
// transaction. Changes at or below the current checkpoint are skipped, so
// a batch delivered twice is applied once. Parked changes are kept for a
// newer build (see [DB.ApplyParked]). It returns how many changes were
// applied.
func (db *DB) Apply(ctx context.Context, b Batch) (int, error) {
	if !b.Channel.Valid() {
		return 0, fmt.Errorf("store: apply: unknown channel %q", b.Channel)
	}
	if b.Stage {
		return db.stage(ctx, b)
	}
	applied := 0
	err := db.tx(ctx, func(tx *sql.Tx) error {
		cp, err := readCheckpoint(ctx, tx, b.Unit, b.Channel)
		if err != nil {
			return err
		}
		changes, rejects := b.split(cp.LastSeq)
		if b.Bulk {
			err = bulkInsert(ctx, tx, b.Channel, changes)
		} else {
			err = upsert(ctx, tx, b.Channel, changes)
		}
		if err != nil {
			return err
		}
		if err := keepParked(ctx, tx, &b, cp.LastSeq, changes); err != nil {
			return err
		}
		if err := insertRejects(ctx, tx, b.Unit, b.Channel, rejects); err != nil {
			return err
		}
		applied = len(changes)
		return advance(ctx, tx, b, cp, len(changes), len(rejects))
	})
	return applied, err
}

// split returns the changes and rejects above checkpoint cp; a change (or
// parked change) that is not of the batch's (unit, channel) becomes a
// reject.
func (b *Batch) split(cp uint64) ([]projections.Change, []projections.Reject) {
	changes := make([]projections.Change, 0, len(b.Changes))
	var rejects []projections.Reject
	for _, c := range b.Changes {
		switch {
		case c.Seq <= cp:
		case c.Addr.OrgUnit != b.Unit || c.Addr.Channel != b.Channel:
			rejects = append(rejects, projections.Reject{Seq: c.Seq, Code: "wrong_stream",
				Err: fmt.Errorf("change for %s/%s read from %s/%s", c.Addr.OrgUnit, c.Addr.Channel, b.Unit, b.Channel)})
		default:
			changes = append(changes, c)
		}
	}
	for _, r := range b.Rejects {
		if r.Seq > cp {
			rejects = append(rejects, r)
		}
	}
	for _, p := range b.Parked {
		if p.Seq > cp && !b.owns(p.Addr) {
			rejects = append(rejects, projections.Reject{Seq: p.Seq, Subject: p.Subject, Code: "wrong_stream",
				Err: fmt.Errorf("change for %s/%s read from %s/%s", p.Addr.OrgUnit, p.Addr.Channel, b.Unit, b.Channel)})
		}
	}
	return changes, rejects
}

func upsert(ctx context.Context, tx *sql.Tx, ch events.Channel, changes []projections.Change) error {
	if len(changes) == 0 {
		return nil
	}
	t := table(ch)
	up, err := tx.PrepareContext(ctx, `INSERT INTO `+t+` (org_unit, kind, record_id, version, event_id, origin, updated_at, body)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_unit, kind, record_id) DO UPDATE SET version = excluded.version, event_id = excluded.event_id,
			origin = excluded.origin, updated_at = excluded.updated_at, body = excluded.body
		WHERE excluded.version > `+t+`.version`)
	if err != nil {
		return fmt.Errorf("store: prepare upsert: %w", err)
	}
	defer up.Close()
	del, err := tx.PrepareContext(ctx, `DELETE FROM `+t+` WHERE org_unit = ? AND kind = ? AND record_id = ? AND version < ?`)
	if err != nil {
		return fmt.Errorf("store: prepare delete: %w", err)
	}
	defer del.Close()
	for _, c := range changes {
		a := c.Addr
		if c.Deleted {
			_, err = del.ExecContext(ctx, a.OrgUnit, a.Kind, a.RecordID, int64(c.Seq))
		} else {
			_, err = up.ExecContext(ctx, a.OrgUnit, a.Kind, a.RecordID, int64(c.Seq), c.EventID, c.OriginID, c.UpdatedAt, c.Body)
		}
		if err != nil {
			return fmt.Errorf("store: apply seq %d: %w", c.Seq, err)
		}
	}
	return nil
}

// bulkRows is how many rows one multi-row INSERT carries in bulk mode.
const bulkRows = 64

func bulkInsert(ctx context.Context, tx *sql.Tx, ch events.Channel, changes []projections.Change) error {
	rows := changes[:0:0]
	for _, c := range changes {
		if !c.Deleted {
			rows = append(rows, c)
		}
	}
	var full *sql.Stmt
	args := make([]any, 0, bulkRows*8)
	for len(rows) > 0 {
		n := min(len(rows), bulkRows)
		stmt, err := bulkStmt(ctx, tx, ch, n, &full)
		if err != nil {
			return err
		}
		args = args[:0]
		for _, c := range rows[:n] {
			a := c.Addr
			args = append(args, a.OrgUnit, a.Kind, a.RecordID, int64(c.Seq), c.EventID, c.OriginID, c.UpdatedAt, c.Body)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("store: bulk insert: %w", err)
		}
		if n < bulkRows {
			stmt.Close()
		}
		rows = rows[n:]
	}
	if full != nil {
		full.Close()
	}
	return nil
}

// bulkStmt returns an n-row INSERT, caching the full-size one in *full.
func bulkStmt(ctx context.Context, tx *sql.Tx, ch events.Channel, n int, full **sql.Stmt) (*sql.Stmt, error) {
	if n == bulkRows && *full != nil {
		return *full, nil
	}
	q := `INSERT INTO ` + table(ch) + ` (org_unit, kind, record_id, version, event_id, origin, updated_at, body) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?,?),", n), ",")
	stmt, err := tx.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("store: prepare bulk insert: %w", err)
	}
	if n == bulkRows {
		*full = stmt
	}
	return stmt, nil
}

func insertRejects(ctx context.Context, tx *sql.Tx, unit string, ch events.Channel, rejects []projections.Reject) error {
	now := time.Now().UnixMilli()
	for _, r := range rejects {
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_errors (at, org_unit, channel, seq, subject, code, message)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, now, unit, string(ch), int64(r.Seq), r.Subject, r.Code, r.Err.Error())
		if err != nil {
			return fmt.Errorf("store: record sync error: %w", err)
		}
	}
	return nil
}
