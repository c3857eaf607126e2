package store

import (
	"context"
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

// LogActivity appends an entry; detail is stored as JSON.
func (db *DB) LogActivity(ctx context.Context, a Activity, detail any) error {
	d, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("store: activity detail: %w", err)
	}
	_, err = db.writer.ExecContext(ctx, `INSERT INTO activity (kind, scope, started, finished, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		a.Kind, a.Scope, a.Started.UnixMilli(), a.Finished.UnixMilli(), a.Outcome, string(d))
	if err != nil {
		return fmt.Errorf("store: log activity: %w", err)
	}
	_, err = db.writer.ExecContext(ctx, `DELETE FROM activity WHERE id <= (SELECT max(id) FROM activity) - ?`, maxActivity)
	return err
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
