package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/events"
)

// A bulk load appends an initial snapshot into an empty channel table with
// its indexes dropped, then builds them once: far faster than maintaining a
// unique index under a million random keys. The meta key bulk:<channel>
// marks a table in that state; [Open] finishes any load a crash
// interrupted before the table is read.

func bulkKey(ch events.Channel) string { return "bulk:" + string(ch) }

// BeginBulk puts channel ch's table in bulk mode if it holds no rows and
// reports whether it did. A table already in bulk mode stays in it.
func (db *DB) BeginBulk(ctx context.Context, ch events.Channel) (bool, error) {
	ok := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM meta WHERE key = ?`, bulkKey(ch)).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			ok = true
			return nil
		}
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM `+table(ch)+` LIMIT 1)`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, dropIndexSQL(ch)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, '1')`, bulkKey(ch))
		ok = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: begin bulk %s: %w", ch, err)
	}
	return ok, nil
}

// EndBulk builds ch's indexes and leaves bulk mode, and applies the write
// results that arrived meanwhile, in one transaction. Rows a bulk load
// appended twice for one record (only possible if a caller broke the
// contract) are reduced to the highest version first.
func (db *DB) EndBulk(ctx context.Context, ch events.Channel) error {
	t := table(ch)
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, indexSQL(ch)); err != nil {
			if _, derr := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE rowid NOT IN (
				SELECT rowid FROM (SELECT rowid, row_number() OVER (PARTITION BY org_unit, kind, record_id ORDER BY version DESC) AS n FROM `+t+`) WHERE n = 1)`); derr != nil {
				return derr
			}
			if _, err := tx.ExecContext(ctx, indexSQL(ch)); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM meta WHERE key = ?`, bulkKey(ch)); err != nil {
			return err
		}
		return applyDeferred(ctx, tx, ch)
	})
	if err != nil {
		return fmt.Errorf("store: end bulk %s: %w", ch, err)
	}
	_, err = db.writer.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}

// InBulk reports whether ch's table is in bulk mode.
func (db *DB) InBulk(ctx context.Context, ch events.Channel) (bool, error) {
	return inBulk(ctx, db.writer, ch)
}

func inBulk(ctx context.Context, q queryer, ch events.Channel) (bool, error) {
	var in bool
	err := q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM meta WHERE key = ?)`, bulkKey(ch)).Scan(&in)
	if err != nil {
		return false, fmt.Errorf("store: bulk mode of %s: %w", ch, err)
	}
	return in, nil
}

// deferResult keeps result r of a write to channel ch, which is in bulk
// mode, for [DB.EndBulk]: without the unique index the table cannot take
// the write's upsert, and appending it would show the record twice. The
// write stays pending meanwhile; a crash keeps the result (Open ends the
// load).
func deferResult(ctx context.Context, tx *sql.Tx, ch events.Channel, r *events.Result, b ResultsBatch) error {
	raw, err := events.EncodeResult(r)
	if err != nil {
		return fmt.Errorf("store: defer result of %s: %w", r.MutationID, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO deferred_results (channel, result, until) VALUES (?, ?, ?)`,
		string(ch), raw, b.Now.Add(b.RetainEvents).UnixMilli())
	if err != nil {
		return fmt.Errorf("store: defer result of %s: %w", r.MutationID, err)
	}
	return nil
}

// applyDeferred applies the results kept for ch during its bulk load, in
// the order they arrived, in the caller's transaction (ch has left bulk
// mode in it).
func applyDeferred(ctx context.Context, tx *sql.Tx, ch events.Channel) error {
	rows, err := tx.QueryContext(ctx, `SELECT result, until FROM deferred_results WHERE channel = ? ORDER BY id`, string(ch))
	if err != nil {
		return err
	}
	var rs []*events.Result
	var until []int64
	for rows.Next() {
		var raw []byte
		var u int64
		if err := rows.Scan(&raw, &u); err != nil {
			rows.Close()
			return err
		}
		r, err := events.DecodeResult(raw)
		if err != nil {
			rows.Close()
			return fmt.Errorf("store: deferred result: %w", err)
		}
		rs, until = append(rs, r), append(until, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for i, r := range rs {
		// The retention time was computed when the result arrived.
		if _, err := applyResult(ctx, tx, r, ResultsBatch{Now: time.UnixMilli(until[i])}); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM deferred_results WHERE channel = ?`, string(ch))
	return err
}

func (db *DB) finishBulk(ctx context.Context) error {
	for _, ch := range events.Channels {
		in, err := db.InBulk(ctx, ch)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if in {
			if err := db.EndBulk(ctx, ch); err != nil {
				return err
			}
		}
	}
	return nil
}
