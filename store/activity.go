package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Activity is one entry of the activity log.
type Activity struct {
	ID       int64          `json:"id"`
	Kind     string         `json:"kind"` // sync, apply, upload, reset, wipe
	Scope    string         `json:"scope,omitempty"`
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Outcome  string         `json:"outcome"` // ok, failed, refused
	Detail   map[string]any `json:"detail"`
}

// maxActivity bounds the log; older entries are dropped.
const maxActivity = 1000

// trimActivity is how often (in entries) the log is trimmed to maxActivity.
const trimActivity = 100

// LogActivity appends an entry; detail is stored as JSON.
func (db *DB) LogActivity(ctx context.Context, a Activity, detail any) error {
	d, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("store: activity detail: %w", err)
	}
	// One short transaction, committed with whatever else the writer
	// groups with it; the log is trimmed every trimActivity entries, so it
	// holds at most maxActivity+trimActivity.
	err = db.shortTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO activity (kind, scope, started, finished, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)`,
			a.Kind, a.Scope, a.Started.UnixMilli(), a.Finished.UnixMilli(), a.Outcome, string(d))
		if err != nil {
			return err
		}
		if id, err := res.LastInsertId(); err != nil || id%trimActivity != 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM activity WHERE id <= (SELECT max(id) FROM activity) - ?`, maxActivity)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: log activity: %w", err)
	}
	return nil
}

// Activities returns the newest entries first, at most limit.
func (db *DB) Activities(ctx context.Context, limit int) ([]Activity, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT id, kind, scope, started, finished, outcome, detail FROM activity ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: activity: %w", err)
	}
	defer rows.Close()
	out := []Activity{}
	for rows.Next() {
		var a Activity
		var started, finished int64
		var detail string
		if err := rows.Scan(&a.ID, &a.Kind, &a.Scope, &started, &finished, &a.Outcome, &detail); err != nil {
			return nil, fmt.Errorf("store: activity: %w", err)
		}
		a.Started, a.Finished = time.UnixMilli(started).UTC(), time.UnixMilli(finished).UTC()
		if err := json.Unmarshal([]byte(detail), &a.Detail); err != nil {
			a.Detail = map[string]any{"raw": detail}
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
