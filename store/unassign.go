package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/events"
)

// UnassignReport says what [DB.Unassign] removed and failed.
type UnassignReport struct {
	Records int `json:"records"`
	// Failed lists the writes to the unit that were still queued: they
	// became sync errors (rejected, not_allowed) the user sees and resolves.
	Failed []Decided `json:"failed,omitempty"`
}

// Unassign removes org unit unit from the device, in one transaction:
// its records in every channel, its staged changes and checkpoints, its
// retention entries, parked changes, recorded bad messages and its
// document files' rows (the caller removes the files, see [DocumentDir]). Writes to
// the unit still queued become sync errors (rejected with reason
// not_allowed and message), never silent drops; writes already sent wait
// for the server's answer like any other.
func (db *DB) Unassign(ctx context.Context, unit, message string, now time.Time) (UnassignReport, error) {
	var r UnassignReport
	if unit == "" {
		return r, fmt.Errorf("store: unassign: the tenant-wide data is not an org unit")
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		r = UnassignReport{}
		for _, ch := range events.Channels {
			res, err := tx.ExecContext(ctx, `DELETE FROM `+table(ch)+` WHERE org_unit = ?`, unit)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			r.Records += int(n)
		}
		for _, t := range []string{"staged", "staged_checkpoints", "checkpoints", "retention", "parked", "sync_errors", "doc_files"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE org_unit = ?`, unit); err != nil {
				return err
			}
		}
		var err error
		r.Failed, err = failQueued(ctx, tx, unit, message, now)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("store: unassign %s: %w", unit, err)
	}
	return r, nil
}

// failQueued turns the unit's queued writes into rejections.
func failQueued(ctx context.Context, tx *sql.Tx, unit, message string, now time.Time) ([]Decided, error) {
	rows, err := tx.QueryContext(ctx, `UPDATE outbox SET state = ?, reason = ?, message = ?, decided_at = ?
		WHERE org_unit = ? AND state = ? RETURNING mutation_id, channel, kind, record_id`,
		string(events.Rejected), events.ReasonNotAllowed, message, now.UnixMilli(), unit, StateQueued)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Decided
	for rows.Next() {
		d := Decided{State: string(events.Rejected), Reason: events.ReasonNotAllowed, Addr: events.Address{OrgUnit: unit}}
		if err := rows.Scan(&d.MutationID, &d.Addr.Channel, &d.Addr.Kind, &d.Addr.RecordID); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// HeldUnits returns the org units the device holds anything of: synced
// data, a staged download, or queued writes ("" the tenant-wide data).
func (db *DB) HeldUnits(ctx context.Context) ([]string, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT org_unit FROM checkpoints UNION SELECT org_unit FROM staged_checkpoints
		UNION SELECT org_unit FROM outbox WHERE state = ? ORDER BY 1`, StateQueued)
	if err != nil {
		return nil, fmt.Errorf("store: held units: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
