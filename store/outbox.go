package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/events"
)

// Outbox states.
const (
	StateQueued   = "queued"   // written on the device, not yet published
	StateSent     = "sent"     // published, result not yet received
	StateConflict = "conflict" // the server's record changed since the base version
	StateRejected = "rejected" // the server refused it
	// StateAccepted is not an outbox state (an accepted write leaves the
	// outbox): it is what [Decided] reports for one.
	StateAccepted = "accepted"
)

// ErrNotFound: no such mutation (or it has no sync error to resolve).
var ErrNotFound = errors.New("store: not found")

// Write is one local change the user made.
type Write struct {
	Addr events.Address
	Op   events.Op
	Body []byte // msgpack map; nil for deletes
}

// Mutation is a queued local change as it goes up.
type Mutation struct {
	Seq         int64
	MutationID  string
	Addr        events.Address
	Op          events.Op
	BaseVersion uint64
	After       string
	Body        []byte
	CreatedAt   time.Time
	State       string
}

// Envelope returns the mutation as device deviceID uploads it.
func (m Mutation) Envelope(deviceID string) *events.Envelope {
	return &events.Envelope{EventID: m.MutationID, OrgUnit: m.Addr.OrgUnit, Channel: m.Addr.Channel, Kind: m.Addr.Kind,
		RecordID: m.Addr.RecordID, Op: m.Op, Body: m.Body, SchemaVersion: events.SchemaVersion, Timestamp: m.CreatedAt.UTC(),
		Origin: events.Origin{DeviceID: deviceID, MutationID: m.MutationID, BaseVersion: m.BaseVersion, After: m.After}}
}

// LocalWrite records a local change in one transaction: it queues the
// mutation (based on the record's current version, or chained after the
// device's previous unconfirmed change of the record) and puts the new
// state in the live overlay, so reads show it at once.
func (db *DB) LocalWrite(ctx context.Context, w Write, mutationID string, now time.Time) (Mutation, error) {
	m := Mutation{MutationID: mutationID, Addr: w.Addr, Op: w.Op, Body: w.Body, CreatedAt: now, State: StateQueued}
	err := db.shortTx(ctx, func(tx *sql.Tx) error {
		if err := chainBase(ctx, tx, &m); err != nil {
			return err
		}
		a := w.Addr
		res, err := tx.ExecContext(ctx, `INSERT INTO outbox (mutation_id, org_unit, channel, kind, record_id, op, base_version,
			after_mutation, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, mutationID, a.OrgUnit, string(a.Channel),
			a.Kind, a.RecordID, string(w.Op), int64(m.BaseVersion), m.After, w.Body, now.UnixMilli())
		if err != nil {
			return fmt.Errorf("store: queue write: %w", err)
		}
		m.Seq, _ = res.LastInsertId()
		return setPending(ctx, tx, a, w.Op == events.OpDelete, w.Body, mutationID, now)
	})
	return m, err
}

// chainBase sets m's base version: the version the device's latest
// unconfirmed change of the record built on (and After to that change), or
// the record's server version as the live view shows it.
func chainBase(ctx context.Context, tx *sql.Tx, m *Mutation) error {
	a := m.Addr
	var base int64
	err := tx.QueryRowContext(ctx, `SELECT mutation_id, base_version FROM outbox
		WHERE org_unit = ? AND channel = ? AND kind = ? AND record_id = ? ORDER BY seq DESC LIMIT 1`,
		a.OrgUnit, string(a.Channel), a.Kind, a.RecordID).Scan(&m.After, &base)
	if err == nil {
		m.BaseVersion = uint64(base)
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: chain write: %w", err)
	}
	m.BaseVersion, err = serverVersion(ctx, tx, a)
	return err
}

// serverVersion returns the version of a the live view shows under the
// pending layer: applied staged changes not yet merged come first, then
// the channel table (0: no such record).
func serverVersion(ctx context.Context, tx *sql.Tx, a events.Address) (uint64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `SELECT `+viewVersion(a.Channel, "k", `(SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?)`)+`
		FROM (SELECT ? AS org_unit, ? AS kind, ? AS record_id) k`, string(a.Channel), metaAppliedGen, a.OrgUnit, a.Kind, a.RecordID).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("store: record version: %w", err)
	}
	return uint64(v), nil
}

func setPending(ctx context.Context, tx *sql.Tx, a events.Address, deleted bool, body []byte, mutationID string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO pending (org_unit, channel, kind, record_id, deleted, body, mutation_id, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_unit, channel, kind, record_id) DO UPDATE SET deleted = excluded.deleted,
		body = excluded.body, mutation_id = excluded.mutation_id, updated_at = excluded.updated_at`,
		a.OrgUnit, string(a.Channel), a.Kind, a.RecordID, deleted, body, mutationID, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("store: pending overlay: %w", err)
	}
	return nil
}

// Queued returns up to limit mutations not yet published, oldest first.
func (db *DB) Queued(ctx context.Context, limit int) ([]Mutation, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT seq, mutation_id, org_unit, channel, kind, record_id, op, base_version,
		after_mutation, body, created_at, state FROM outbox WHERE state = ? ORDER BY seq LIMIT ?`, StateQueued, limit)
	if err != nil {
		return nil, fmt.Errorf("store: queued: %w", err)
	}
	defer rows.Close()
	var out []Mutation
	for rows.Next() {
		var m Mutation
		var base, created int64
		if err := rows.Scan(&m.Seq, &m.MutationID, &m.Addr.OrgUnit, &m.Addr.Channel, &m.Addr.Kind, &m.Addr.RecordID,
			&m.Op, &base, &m.After, &m.Body, &created, &m.State); err != nil {
			return nil, fmt.Errorf("store: queued: %w", err)
		}
		m.BaseVersion, m.CreatedAt = uint64(base), time.UnixMilli(created)
		out = append(out, m)
	}
	return out, rows.Err()
}

// MarkSent records that a mutation was published.
func (db *DB) MarkSent(ctx context.Context, mutationID string, now time.Time) error {
	_, err := db.writer.ExecContext(ctx, `UPDATE outbox SET state = ?, sent_at = ? WHERE mutation_id = ? AND state = ?`,
		StateSent, now.UnixMilli(), mutationID, StateQueued)
	if err != nil {
		return fmt.Errorf("store: mark sent: %w", err)
	}
	return nil
}

// MarkSentAll is [DB.MarkSent] for several mutations, in one statement
// (so in one transaction).
func (db *DB) MarkSentAll(ctx context.Context, mutationIDs []string, now time.Time) error {
	ids, err := json.Marshal(mutationIDs)
	if err != nil {
		return fmt.Errorf("store: mark sent: %w", err)
	}
	if _, err := db.writer.ExecContext(ctx, `UPDATE outbox SET state = ?, sent_at = ?
		WHERE state = ? AND mutation_id IN (SELECT value FROM json_each(?))`, StateSent, now.UnixMilli(), StateQueued, string(ids)); err != nil {
		return fmt.Errorf("store: mark sent: %w", err)
	}
	db.committed()
	return nil
}

// OutboxCounts returns how many mutations are in each state.
func (db *DB) OutboxCounts(ctx context.Context) (map[string]int, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT state, count(*) FROM outbox GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("store: outbox counts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{StateQueued: 0, StateSent: 0, StateConflict: 0, StateRejected: 0}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}
