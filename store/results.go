package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fieldsync/fieldsync/events"
)

const metaResultsSeq = "results_seq"

// ResultsBatch is a run of ingest results for this device.
type ResultsBatch struct {
	Results []*events.Result
	// LastSeq is the results stream sequence after the batch.
	LastSeq uint64
	// RetainEvents is how long an event created on the device stays after
	// it was accepted (0: removed at once).
	RetainEvents time.Duration
	Now          time.Time
}

// ResultsCheckpoint returns the last results stream sequence applied.
func (db *DB) ResultsCheckpoint(ctx context.Context) (uint64, error) {
	v, err := db.Meta(ctx, metaResultsSeq)
	if err != nil || v == "" {
		return 0, err
	}
	return strconv.ParseUint(v, 10, 64)
}

// Decided is what a result decided for a write the device held, as
// [DB.ApplyResults] reports it once committed.
type Decided struct {
	MutationID string
	Addr       events.Address
	// State is StateAccepted (the write is part of the server state and
	// left the outbox), StateConflict or StateRejected (a sync error).
	State string
	// Version is the record's version after an accepted write; Reason
	// says why a write was rejected.
	Version uint64
	Reason  string
}

// ApplyResults applies ingest results and advances the results checkpoint
// in one transaction, and returns what they decided. A result for a
// mutation the device no longer holds (already applied, or resolved) is
// ignored. A result for a record whose channel is in bulk mode (see
// [DB.BeginBulk]) is kept in the store and applied when the load ends;
// until then the write stays pending, and it is not among the returned.
func (db *DB) ApplyResults(ctx context.Context, b ResultsBatch) ([]Decided, error) {
	var decided []Decided
	err := db.shortTx(ctx, func(tx *sql.Tx) error {
		decided = decided[:0]
		for _, r := range b.Results {
			d, err := applyResult(ctx, tx, r, b)
			if err != nil {
				return err
			}
			if d != nil {
				decided = append(decided, *d)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE CAST(excluded.value AS INTEGER) > CAST(value AS INTEGER)`,
			metaResultsSeq, strconv.FormatUint(b.LastSeq, 10))
		return err
	})
	if err != nil {
		return nil, err
	}
	return decided, nil
}

// applyResult applies r and returns what it decided; nil when it decided
// nothing now (no such write, or deferred by a bulk load).
func applyResult(ctx context.Context, tx *sql.Tx, r *events.Result, b ResultsBatch) (*Decided, error) {
	m, err := outboxRow(ctx, tx, r.MutationID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if bulk, err := inBulk(ctx, tx, m.Addr.Channel); err != nil || bulk {
		if err != nil {
			return nil, err
		}
		return nil, deferResult(ctx, tx, m.Addr.Channel, r, b)
	}
	d := &Decided{MutationID: m.MutationID, Addr: m.Addr, State: string(r.Status), Version: r.Version, Reason: r.Reason}
	switch r.Status {
	case events.Accepted:
		d.State = StateAccepted
		return d, accept(ctx, tx, m, r, b)
	case events.Conflict, events.Rejected:
		return d, markFailed(ctx, tx, m, r)
	}
	return nil, nil
}

func outboxRow(ctx context.Context, tx *sql.Tx, mutationID string) (Mutation, error) {
	var m Mutation
	var base, created int64
	err := tx.QueryRowContext(ctx, `SELECT seq, mutation_id, org_unit, channel, kind, record_id, op, base_version, after_mutation,
		body, created_at, state FROM outbox WHERE mutation_id = ?`, mutationID).Scan(&m.Seq, &m.MutationID, &m.Addr.OrgUnit,
		&m.Addr.Channel, &m.Addr.Kind, &m.Addr.RecordID, &m.Op, &base, &m.After, &m.Body, &created, &m.State)
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("store: outbox row: %w", err)
	}
	m.BaseVersion, m.CreatedAt = uint64(base), time.UnixMilli(created)
	return m, nil
}

// accept makes an accepted mutation part of the server state at its new
// version, drops it from the outbox and, if nothing newer is pending for
// the record, from the overlay.
func accept(ctx context.Context, tx *sql.Tx, m Mutation, r *events.Result, b ResultsBatch) error {
	a := m.Addr
	var err error
	if m.Op == events.OpDelete {
		_, err = tx.ExecContext(ctx, `DELETE FROM `+table(a.Channel)+` WHERE org_unit = ? AND kind = ? AND record_id = ? AND version < ?`,
			a.OrgUnit, a.Kind, a.RecordID, int64(r.Version))
	} else {
		err = upsertServer(ctx, tx, a, r.Version, events.MutationEventID(r.DeviceID, r.MutationID), r.DeviceID, m.CreatedAt.UnixMilli(), m.Body)
	}
	if err != nil {
		return fmt.Errorf("store: accept %s: %w", m.MutationID, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE mutation_id = ?`, m.MutationID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM pending WHERE org_unit = ? AND channel = ? AND kind = ? AND record_id = ? AND mutation_id = ?`,
		a.OrgUnit, string(a.Channel), a.Kind, a.RecordID, m.MutationID); err != nil {
		return err
	}
	if a.Channel == events.ChannelEvents && m.BaseVersion == 0 && m.After == "" && m.Op == events.OpUpsert {
		_, err = tx.ExecContext(ctx, `INSERT OR REPLACE INTO retention (org_unit, kind, record_id, until) VALUES (?, ?, ?, ?)`,
			a.OrgUnit, a.Kind, a.RecordID, b.Now.Add(b.RetainEvents).UnixMilli())
	}
	return err
}

// upsertServer records the server's state of a record learned outside a
// download (an accepted write, a conflict): it goes into the channel
// table, and any staged change of the record it supersedes is dropped.
func upsertServer(ctx context.Context, tx *sql.Tx, a events.Address, version uint64, eventID, origin string, at int64, body []byte) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM staged WHERE channel = ? AND org_unit = ? AND kind = ? AND record_id = ? AND version <= ?`,
		string(a.Channel), a.OrgUnit, a.Kind, a.RecordID, int64(version)); err != nil {
		return err
	}
	return upsertBase(ctx, tx, a, version, eventID, origin, at, body)
}

func upsertBase(ctx context.Context, tx *sql.Tx, a events.Address, version uint64, eventID, origin string, at int64, body []byte) error {
	t := table(a.Channel)
	_, err := tx.ExecContext(ctx, `INSERT INTO `+t+` (org_unit, kind, record_id, version, event_id, origin, updated_at, body)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_unit, kind, record_id) DO UPDATE SET version = excluded.version,
		event_id = excluded.event_id, origin = excluded.origin, updated_at = excluded.updated_at, body = excluded.body
		WHERE excluded.version > `+t+`.version`, a.OrgUnit, a.Kind, a.RecordID, int64(version), eventID, origin, at, body)
	return err
}

// markFailed turns a conflict or rejection into a sync error the user
// resolves. The server's current state, when the result carries it,
// becomes the device's server state right away.
func markFailed(ctx context.Context, tx *sql.Tx, m Mutation, r *events.Result) error {
	_, err := tx.ExecContext(ctx, `UPDATE outbox SET state = ?, reason = ?, message = ?, server_version = ?, server_deleted = ?,
		server_body = ?, decided_at = ? WHERE mutation_id = ?`, string(r.Status), r.Reason, r.Message, int64(r.ServerVersion),
		r.ServerDeleted, r.ServerBody, r.At, m.MutationID)
	if err != nil {
		return fmt.Errorf("store: record sync error: %w", err)
	}
	if r.Status != events.Conflict {
		return nil
	}
	a := m.Addr
	if r.ServerDeleted {
		_, err = tx.ExecContext(ctx, `DELETE FROM `+table(a.Channel)+` WHERE org_unit = ? AND kind = ? AND record_id = ? AND version < ?`,
			a.OrgUnit, a.Kind, a.RecordID, int64(r.ServerVersion))
		return err
	}
	if len(r.ServerBody) == 0 {
		return nil
	}
	return upsertServer(ctx, tx, a, r.ServerVersion, "", "", r.At, r.ServerBody)
}

// PurgeRetained removes events created on the device whose retention
// ended before now, and returns how many.
func (db *DB) PurgeRetained(ctx context.Context, now time.Time) (int, error) {
	n := 0
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM records_events WHERE rowid IN (SELECT e.rowid FROM records_events e
			JOIN retention r ON r.org_unit = e.org_unit AND r.kind = e.kind AND r.record_id = e.record_id WHERE r.until <= ?)`, now.UnixMilli())
		if err != nil {
			return err
		}
		c, _ := res.RowsAffected()
		n = int(c)
		_, err = tx.ExecContext(ctx, `DELETE FROM retention WHERE until <= ?`, now.UnixMilli())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: purge retained events: %w", err)
	}
	return n, nil
}
