package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// WipeReport says what a wipe removed.
type WipeReport struct {
	Records int `json:"records"`
	// Unsent counts local writes that had not been confirmed by the server
	// (queued, sent, or waiting as sync errors): they are gone with the rest,
	// and the count is what the log reports.
	Unsent int `json:"unsent"`
}

// Wipe removes every piece of org data from the device: projections, the
// outbox and its overlay, checkpoints, recorded bad messages, parked
// changes and the sync-progress metadata. Device identity settings in meta that keys lists
// are kept.
func (db *DB) Wipe(ctx context.Context, keep ...string) (WipeReport, error) {
	var r WipeReport
	err := db.tx(ctx, func(tx *sql.Tx) error {
		for _, t := range []string{"records_events", "records_admin", "records_documents"} {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+t).Scan(&n); err != nil {
				return err
			}
			r.Records += n
		}
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&r.Unsent); err != nil {
			return err
		}
		for _, t := range []string{"records_events", "records_admin", "records_documents", "outbox", "pending",
			"retention", "checkpoints", "sync_errors", "staged", "staged_checkpoints", "parked"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t); err != nil {
				return err
			}
		}
		return deleteMetaExcept(ctx, tx, keep)
	})
	if err != nil {
		return r, fmt.Errorf("store: wipe: %w", err)
	}
	_, err = db.writer.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return r, err
}

func deleteMetaExcept(ctx context.Context, tx *sql.Tx, keep []string) error {
	q, args := `DELETE FROM meta`, []any{}
	if len(keep) > 0 {
		q += ` WHERE key NOT IN (?` + strings.Repeat(",?", len(keep)-1) + `)`
		for _, k := range keep {
			args = append(args, k)
		}
	}
	_, err := tx.ExecContext(ctx, q, args...)
	return err
}
