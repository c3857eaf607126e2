package store

import (
	"context"
	"database/sql"

	"github.com/fieldsync/fieldsync/events"
)

type stagedRow struct {
	addr      events.Address
	gen       int64
	version   int64
	eventID   string
	origin    string
	updatedAt int64
	deleted   bool
	body      []byte
}

func scanStaged(rows *sql.Rows) ([]stagedRow, error) {
	defer rows.Close()
	var out []stagedRow
	for rows.Next() {
		var r stagedRow
		if err := rows.Scan(&r.addr.Channel, &r.addr.OrgUnit, &r.addr.Kind, &r.addr.RecordID, &r.gen, &r.version, &r.eventID,
			&r.origin, &r.updatedAt, &r.deleted, &r.body); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// mergeRows writes applied staged rows into their channel tables and
// removes them from staging, in the caller's transaction. Rows of one
// record come oldest generation first.
func mergeRows(ctx context.Context, tx *sql.Tx, batch []stagedRow) error {
	for _, r := range batch {
		a := r.addr
		var err error
		if r.deleted {
			_, err = tx.ExecContext(ctx, `DELETE FROM `+table(a.Channel)+` WHERE org_unit = ? AND kind = ? AND record_id = ? AND version < ?`,
				a.OrgUnit, a.Kind, a.RecordID, r.version)
		} else {
			err = upsertBase(ctx, tx, a, uint64(r.version), r.eventID, r.origin, r.updatedAt, r.body)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM staged WHERE channel = ? AND org_unit = ? AND kind = ? AND record_id = ? AND gen = ?`,
			string(a.Channel), a.OrgUnit, a.Kind, a.RecordID, r.gen); err != nil {
			return err
		}
	}
	return nil
}
