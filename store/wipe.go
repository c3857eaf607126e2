package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/fieldsync/fieldsync/events"
)

// SettingPrefix starts the meta keys of device settings (the refresh-mode
// switch, for one): they belong to the device, not to the org data, and
// every wipe keeps them.
const SettingPrefix = "setting:"

// ErrUnconfirmed: the outbox holds local writes the server has not
// confirmed (queued, sent, or waiting as sync errors), so
// [DB.WipeConfirmed] cleared nothing.
var ErrUnconfirmed = errors.New("store: local writes not yet confirmed by the server")

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
// changes and the sync-progress metadata, unconfirmed local writes
// included (counted in the report). Device settings ([SettingPrefix]) and the meta keys keep
// lists are kept.
func (db *DB) Wipe(ctx context.Context, keep ...string) (WipeReport, error) {
	return db.wipe(ctx, false, keep)
}

// WipeConfirmed is [DB.Wipe] for Sync Now: checking that every local write
// is confirmed and wiping are one transaction, so a write made at any
// moment is either confirmed before the wipe or refuses it. When the
// outbox holds anything, it clears nothing and fails with an error
// wrapping [ErrUnconfirmed].
func (db *DB) WipeConfirmed(ctx context.Context, keep ...string) (WipeReport, error) {
	return db.wipe(ctx, true, keep)
}

func (db *DB) wipe(ctx context.Context, confirmed bool, keep []string) (WipeReport, error) {
	var r WipeReport
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&r.Unsent); err != nil {
			return err
		}
		if confirmed && r.Unsent > 0 {
			return fmt.Errorf("%w: %d in the outbox", ErrUnconfirmed, r.Unsent)
		}
		for _, ch := range events.Channels {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+table(ch)).Scan(&n); err != nil {
				return err
			}
			r.Records += n
		}
		for _, t := range []string{"records_events", "records_admin", "records_documents", "outbox", "pending",
			"retention", "checkpoints", "sync_errors", "staged", "staged_checkpoints", "deferred_results", "parked"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t); err != nil {
				return err
			}
		}
		for _, ch := range events.Channels { // a table left in bulk mode gets its indexes back
			if _, err := tx.ExecContext(ctx, indexSQL(ch)); err != nil {
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
	q, args := `DELETE FROM meta WHERE substr(key, 1, ?) != ?`, []any{len(SettingPrefix), SettingPrefix}
	if len(keep) > 0 {
		q += ` AND key NOT IN (?` + strings.Repeat(",?", len(keep)-1) + `)`
		for _, k := range keep {
			args = append(args, k)
		}
	}
	_, err := tx.ExecContext(ctx, q, args...)
	return err
}
