package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
)

// Conflict is a sync error on a local write: a conflict or a rejection,
// with the local change and the server's version of the record.
type Conflict struct {
	MutationID    string         `json:"id"`
	OrgUnit       string         `json:"org_unit"`
	Channel       events.Channel `json:"channel"`
	Kind          string         `json:"kind"`
	RecordID      string         `json:"record_id"`
	State         string         `json:"state"` // conflict or rejected
	Reason        string         `json:"reason,omitempty"`
	Message       string         `json:"message"`
	LocalOp       events.Op      `json:"local_op"`
	LocalBody     map[string]any `json:"local_body,omitempty"`
	BaseVersion   uint64         `json:"base_version"`
	ServerVersion uint64         `json:"server_version"`
	ServerDeleted bool           `json:"server_deleted"`
	ServerBody    map[string]any `json:"server_body,omitempty"`
	CreatedAt     time.Time      `json:"created_at"`
	DecidedAt     time.Time      `json:"decided_at"`
}

// Conflicts returns the unresolved sync errors of local writes, oldest first.
func (db *DB) Conflicts(ctx context.Context) ([]Conflict, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT mutation_id, org_unit, channel, kind, record_id, state, reason, message, op,
		body, base_version, server_version, server_deleted, server_body, created_at, decided_at FROM outbox
		WHERE state IN (?, ?) ORDER BY seq`, StateConflict, StateRejected)
	if err != nil {
		return nil, fmt.Errorf("store: conflicts: %w", err)
	}
	defer rows.Close()
	out := []Conflict{}
	for rows.Next() {
		var c Conflict
		var local, server []byte
		var base, sver, created, decided int64
		if err := rows.Scan(&c.MutationID, &c.OrgUnit, &c.Channel, &c.Kind, &c.RecordID, &c.State, &c.Reason, &c.Message,
			&c.LocalOp, &local, &base, &sver, &c.ServerDeleted, &server, &created, &decided); err != nil {
			return nil, fmt.Errorf("store: conflicts: %w", err)
		}
		c.BaseVersion, c.ServerVersion = uint64(base), uint64(sver)
		c.CreatedAt, c.DecidedAt = time.UnixMilli(created).UTC(), time.UnixMilli(decided).UTC()
		c.LocalBody, c.ServerBody = decodeBody(local), decodeBody(server)
		out = append(out, c)
	}
	return out, rows.Err()
}

// decodeBody returns the body b encodes, nil if there is none or it is
// not a valid record body (one an older build stored): a sync error is
// still listed, without that side's body.
func decodeBody(b []byte) map[string]any {
	if len(b) == 0 || events.ValidateBody(b) != nil {
		return nil
	}
	var m map[string]any
	if msgpack.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

// Resolutions of a sync error.
const (
	ResolveUndo     = "undo"     // drop the local change, keep the server's record
	ResolveUndelete = "undelete" // the server deleted the record: re-create it with the local change
	ResolveRetry    = "retry"    // send the local change again, based on the server's current version
)

// ErrCannotResolve: the resolution does not apply to this sync error.
var ErrCannotResolve = errors.New("store: resolution does not apply")

// Resolve settles the sync error of mutationID. Every unconfirmed change
// of that record is dropped; Undelete and Retry queue one new mutation
// (newMutationID) carrying the device's latest local state of the record,
// based on the server's version. It returns the new mutation, if any.
func (db *DB) Resolve(ctx context.Context, mutationID, action, newMutationID string, now time.Time) (*Mutation, error) {
	var out *Mutation
	err := db.shortTx(ctx, func(tx *sql.Tx) error {
		c, err := conflictRow(ctx, tx, mutationID)
		if err != nil {
			return err
		}
		if err := checkResolution(c, action); err != nil {
			return err
		}
		deleted, body, err := pendingState(ctx, tx, c)
		if err != nil {
			return err
		}
		if err := dropRecordChanges(ctx, tx, c); err != nil {
			return err
		}
		if action == ResolveUndo {
			return nil
		}
		m, err := requeue(ctx, tx, c, deleted, body, newMutationID, now)
		out = &m
		return err
	})
	return out, err
}

type conflictKey struct {
	addr          events.Address
	state         string
	serverVersion uint64
	serverDeleted bool
}

func conflictRow(ctx context.Context, tx *sql.Tx, mutationID string) (conflictKey, error) {
	var c conflictKey
	var sver int64
	err := tx.QueryRowContext(ctx, `SELECT org_unit, channel, kind, record_id, state, server_version, server_deleted FROM outbox
		WHERE mutation_id = ? AND state IN (?, ?)`, mutationID, StateConflict, StateRejected).Scan(&c.addr.OrgUnit, &c.addr.Channel,
		&c.addr.Kind, &c.addr.RecordID, &c.state, &sver, &c.serverDeleted)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("%w: no sync error for mutation %q", ErrNotFound, mutationID)
	}
	c.serverVersion = uint64(sver)
	return c, err
}

func checkResolution(c conflictKey, action string) error {
	switch action {
	case ResolveUndo:
		return nil
	case ResolveUndelete:
		if !c.serverDeleted || c.state != StateConflict {
			return fmt.Errorf("%w: undelete needs a record the server deleted", ErrCannotResolve)
		}
	case ResolveRetry:
		if c.state == StateRejected {
			return fmt.Errorf("%w: the server rejected the change; retrying sends the same refusal again (use undo)", ErrCannotResolve)
		}
	default:
		return fmt.Errorf("%w: unknown resolution %q (want undo, undelete or retry)", ErrCannotResolve, action)
	}
	return nil
}

// pendingState is the device's latest local state of the record.
func pendingState(ctx context.Context, tx *sql.Tx, c conflictKey) (bool, []byte, error) {
	a := c.addr
	var deleted bool
	var body []byte
	err := tx.QueryRowContext(ctx, `SELECT deleted, body FROM pending WHERE org_unit = ? AND channel = ? AND kind = ? AND record_id = ?`,
		a.OrgUnit, string(a.Channel), a.Kind, a.RecordID).Scan(&deleted, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil, nil
	}
	return deleted, body, err
}

func dropRecordChanges(ctx context.Context, tx *sql.Tx, c conflictKey) error {
	a := c.addr
	for _, q := range []string{`DELETE FROM outbox WHERE org_unit = ? AND channel = ? AND kind = ? AND record_id = ?`,
		`DELETE FROM pending WHERE org_unit = ? AND channel = ? AND kind = ? AND record_id = ?`} {
		if _, err := tx.ExecContext(ctx, q, a.OrgUnit, string(a.Channel), a.Kind, a.RecordID); err != nil {
			return fmt.Errorf("store: resolve: %w", err)
		}
	}
	return nil
}

func requeue(ctx context.Context, tx *sql.Tx, c conflictKey, deleted bool, body []byte, id string, now time.Time) (Mutation, error) {
	op := events.OpUpsert
	if deleted {
		op, body = events.OpDelete, nil
	}
	m := Mutation{MutationID: id, Addr: c.addr, Op: op, Body: body, BaseVersion: c.serverVersion, CreatedAt: now, State: StateQueued}
	a := c.addr
	res, err := tx.ExecContext(ctx, `INSERT INTO outbox (mutation_id, org_unit, channel, kind, record_id, op, base_version, body, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, a.OrgUnit, string(a.Channel), a.Kind, a.RecordID, string(op), int64(c.serverVersion), body, now.UnixMilli())
	if err != nil {
		return m, fmt.Errorf("store: requeue: %w", err)
	}
	m.Seq, _ = res.LastInsertId()
	return m, setPending(ctx, tx, a, deleted, body, id, now)
}
