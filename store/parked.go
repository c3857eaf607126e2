package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
)

// Parked changes. A change the running build cannot read but a newer one
// may ([projections.Parked]: a newer envelope schema, a kind its reader
// does not accept) is kept in the parked table as received, with the
// stream position it was read at, instead of being recorded as a bad
// message; the checkpoint moves past it as past any other change.
// [DB.ApplyParked], which the agent runs when it starts, reads the parked
// changes again with the running build's reader, in stream order, and
// applies those it can read.
//
// Order per record: a change applied or staged for a record supersedes
// the record's parked changes older than it, which are deleted then, since
// the newer change decides the record whatever they say. So a parked
// change that is applied later is always newer than what the device holds
// of its record. (Superseding has to happen when the newer change arrives:
// a delete leaves no row whose version a parked change could be compared
// with afterwards.)

// ParkedChange is one parked change.
type ParkedChange struct {
	Unit     string         `json:"org_unit"`
	Channel  events.Channel `json:"channel"`
	Seq      uint64         `json:"seq"`
	Subject  string         `json:"subject"`
	Kind     string         `json:"kind"`
	RecordID string         `json:"record_id"`
	// Version is the change's envelope schema version (0: unreadable).
	Version int `json:"schema_version"`
	// Reason is why it is parked: unknown_version or unknown_kind.
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// owns reports whether a is a record of b's (unit, channel).
func (b *Batch) owns(a events.Address) bool { return a.OrgUnit == b.Unit && a.Channel == b.Channel }

// keepParked stores b's parked changes above checkpoint cp (those of
// another stream are rejects, see split) and drops the parked changes that
// changes supersede, in the caller's transaction. A change parked twice
// (a redelivery, a download started over) is stored once.
func keepParked(ctx context.Context, tx *sql.Tx, b *Batch, cp uint64, changes []projections.Change) error {
	now, kept := time.Now().UnixMilli(), false
	for _, p := range b.Parked {
		if p.Seq <= cp || !b.owns(p.Addr) {
			continue
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO parked (org_unit, channel, seq, subject, kind, record_id, version, data, reason, message, parked_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_unit, channel, seq) DO NOTHING`,
			b.Unit, string(b.Channel), int64(p.Seq), p.Subject, p.Addr.Kind, p.Addr.RecordID, p.Version, p.Data, p.Code, errText(p.Err), now)
		if err != nil {
			return fmt.Errorf("store: park seq %d: %w", p.Seq, err)
		}
		kept = true
	}
	return supersedeParked(ctx, tx, b.Unit, b.Channel, changes, kept)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// supersedeParked deletes, for each change, the parked changes of its
// record older than it. known says parked rows of the stream exist;
// otherwise one lookup decides whether there is anything to do, so the
// common case (nothing parked) costs one query per batch.
func supersedeParked(ctx context.Context, tx *sql.Tx, unit string, ch events.Channel, changes []projections.Change, known bool) error {
	if len(changes) == 0 {
		return nil
	}
	if !known {
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM parked WHERE org_unit = ? AND channel = ?)`,
			unit, string(ch)).Scan(&known); err != nil {
			return fmt.Errorf("store: parked changes: %w", err)
		}
		if !known {
			return nil
		}
	}
	del, err := tx.PrepareContext(ctx, `DELETE FROM parked WHERE org_unit = ? AND channel = ? AND kind = ? AND record_id = ? AND seq < ?`)
	if err != nil {
		return fmt.Errorf("store: prepare supersede: %w", err)
	}
	defer del.Close()
	for _, c := range changes {
		if _, err := del.ExecContext(ctx, unit, string(ch), c.Addr.Kind, c.Addr.RecordID, int64(c.Seq)); err != nil {
			return fmt.Errorf("store: supersede parked changes of seq %d: %w", c.Seq, err)
		}
	}
	return nil
}

// UnparkReport says what [DB.ApplyParked] did.
type UnparkReport struct {
	// Applied counts parked changes read and applied (a change older than
	// what the device holds of its record counts, and changes nothing).
	Applied int `json:"applied"`
	// Rejected counts parked changes found bad once read: they are sync
	// errors now.
	Rejected int `json:"rejected"`
	// Left counts the changes still parked: the reader cannot read them
	// either.
	Left int `json:"left"`
}

// unparkChunk is how many parked changes one transaction of
// [DB.ApplyParked] looks at; their bytes are read one at a time.
const unparkChunk = 500

// ApplyParked reads the parked changes again with r, stream by stream in
// stream order, in transactions of a few hundred. A change r reads is
// applied to the live view unless the device already holds a newer state
// of its record, and supersedes the record's older parked changes; a
// change r finds bad becomes a sync error; a change r cannot read either
// stays parked (its reason updated). Changes whose schema version or kind
// r does not read are skipped without being decoded, so running it with
// the same reader again costs one index scan.
func (db *DB) ApplyParked(ctx context.Context, r projections.Reader) (UnparkReport, error) {
	var rep UnparkReport
	streams, err := db.parkedStreams(ctx)
	if err != nil {
		return rep, err
	}
	for _, st := range streams {
		for after := uint64(0); ; {
			last, err := db.unpark(ctx, r, st, after, &rep)
			if err != nil {
				return rep, err
			}
			if last == 0 {
				break
			}
			after = last
		}
	}
	rep.Left, err = db.CountParked(ctx)
	return rep, err
}

func (db *DB) parkedStreams(ctx context.Context) ([]projections.Stream, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT DISTINCT org_unit, channel FROM parked ORDER BY org_unit, channel`)
	if err != nil {
		return nil, fmt.Errorf("store: parked changes: %w", err)
	}
	defer rows.Close()
	var out []projections.Stream
	for rows.Next() {
		var st projections.Stream
		if err := rows.Scan(&st.Unit, &st.Channel); err != nil {
			return nil, fmt.Errorf("store: parked changes: %w", err)
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

// unpark handles the parked changes of st after seq after, one chunk in
// one transaction, and returns the last seq looked at (0: none left).
func (db *DB) unpark(ctx context.Context, r projections.Reader, st projections.Stream, after uint64, rep *UnparkReport) (uint64, error) {
	var last uint64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		heads, err := parkedHeads(ctx, tx, st, after)
		if err != nil || len(heads) == 0 {
			return err
		}
		last = heads[len(heads)-1].Seq
		var changes []projections.Change
		var rejects []projections.Reject
		for _, p := range heads {
			if !r.MayRead(p) {
				continue
			}
			c, rj, err := reread(ctx, tx, r, st, p)
			switch {
			case err != nil:
				return err
			case rj != nil:
				rejects = append(rejects, *rj)
			case c != nil:
				changes = append(changes, *c)
			}
		}
		if err := applyUnparked(ctx, tx, st, changes); err != nil {
			return err
		}
		if err := insertRejects(ctx, tx, st.Unit, st.Channel, rejects); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE checkpoints SET applied = applied + ?, rejected = rejected + ?
			WHERE org_unit = ? AND channel = ?`, len(changes), len(rejects), st.Unit, string(st.Channel)); err != nil {
			return fmt.Errorf("store: count unparked changes: %w", err)
		}
		rep.Applied += len(changes)
		rep.Rejected += len(rejects)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: apply parked changes of %s/%s: %w", st.Unit, st.Channel, err)
	}
	return last, nil
}

// parkedHeads returns up to unparkChunk parked changes of st after seq
// after, without their bytes.
func parkedHeads(ctx context.Context, tx *sql.Tx, st projections.Stream, after uint64) ([]projections.Parked, error) {
	rows, err := tx.QueryContext(ctx, `SELECT seq, kind, record_id, version FROM parked WHERE org_unit = ? AND channel = ? AND seq > ?
		ORDER BY seq LIMIT ?`, st.Unit, string(st.Channel), int64(after), unparkChunk)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []projections.Parked
	for rows.Next() {
		p := projections.Parked{Addr: events.Address{OrgUnit: st.Unit, Channel: st.Channel}}
		var seq int64
		if err := rows.Scan(&seq, &p.Addr.Kind, &p.Addr.RecordID, &p.Version); err != nil {
			return nil, err
		}
		p.Seq = uint64(seq)
		out = append(out, p)
	}
	return out, rows.Err()
}

// reread decodes parked change p with r. A change or a reject leaves the
// parked table; a change r cannot read either stays, with its new reason.
func reread(ctx context.Context, tx *sql.Tx, r projections.Reader, st projections.Stream, p projections.Parked) (*projections.Change, *projections.Reject, error) {
	m := projections.Message{Seq: p.Seq}
	key := []any{st.Unit, string(st.Channel), int64(p.Seq)}
	if err := tx.QueryRowContext(ctx, `SELECT subject, data FROM parked WHERE org_unit = ? AND channel = ? AND seq = ?`, key...).
		Scan(&m.Subject, &m.Data); err != nil {
		return nil, nil, err
	}
	c, decodeErr := r.FromMessage(m)
	if decodeErr != nil && projections.Parkable(decodeErr) {
		v, _ := events.PeekVersion(m.Data)
		_, err := tx.ExecContext(ctx, `UPDATE parked SET reason = ?, message = ?, version = ? WHERE org_unit = ? AND channel = ? AND seq = ?`,
			append([]any{projections.Code(decodeErr), decodeErr.Error(), v}, key...)...)
		return nil, nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM parked WHERE org_unit = ? AND channel = ? AND seq = ?`, key...); err != nil {
		return nil, nil, err
	}
	if decodeErr != nil {
		return nil, &projections.Reject{Seq: p.Seq, Subject: m.Subject, Err: decodeErr, Code: projections.Code(decodeErr)}, nil
	}
	return &c, nil, nil
}

// applyUnparked applies changes read from parked rows of st, in stream
// order. Each is newer than the record's state in the channel table (older
// parked changes are superseded on arrival of newer ones) but the staged
// download may hold the record too: a staged change newer than it decides
// the record; an older staged change takes its content (keeping its
// generation), so the view shows it now and after the next Apply.
func applyUnparked(ctx context.Context, tx *sql.Tx, st projections.Stream, changes []projections.Change) error {
	live := changes[:0:0]
	for _, c := range changes {
		a := c.Addr
		var v int64
		err := tx.QueryRowContext(ctx, `SELECT version FROM staged WHERE channel = ? AND org_unit = ? AND kind = ? AND record_id = ?`,
			string(a.Channel), a.OrgUnit, a.Kind, a.RecordID).Scan(&v)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case uint64(v) >= c.Seq:
			continue
		default:
			if _, err := tx.ExecContext(ctx, `UPDATE staged SET version = ?, event_id = ?, origin = ?, updated_at = ?, deleted = ?, body = ?
				WHERE channel = ? AND org_unit = ? AND kind = ? AND record_id = ?`, int64(c.Seq), c.EventID, c.OriginID, c.UpdatedAt,
				c.Deleted, c.Body, string(a.Channel), a.OrgUnit, a.Kind, a.RecordID); err != nil {
				return err
			}
		}
		live = append(live, c)
	}
	if err := upsert(ctx, tx, st.Channel, live); err != nil {
		return err
	}
	return supersedeParked(ctx, tx, st.Unit, st.Channel, changes, true)
}

// CountParked returns how many changes are parked.
func (db *DB) CountParked(ctx context.Context) (int, error) {
	var n int
	if err := db.reader.QueryRowContext(ctx, `SELECT count(*) FROM parked`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count parked changes: %w", err)
	}
	return n, nil
}

// Parked returns the parked changes in stream order (unit, channel, seq),
// at most limit, without their bytes.
func (db *DB) Parked(ctx context.Context, limit int) ([]ParkedChange, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT org_unit, channel, seq, subject, kind, record_id, version, reason, message, parked_at
		FROM parked ORDER BY org_unit, channel, seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: parked changes: %w", err)
	}
	defer rows.Close()
	out := []ParkedChange{}
	for rows.Next() {
		var p ParkedChange
		var seq, at int64
		if err := rows.Scan(&p.Unit, &p.Channel, &seq, &p.Subject, &p.Kind, &p.RecordID, &p.Version, &p.Reason, &p.Message, &at); err != nil {
			return nil, fmt.Errorf("store: parked changes: %w", err)
		}
		p.Seq, p.At = uint64(seq), time.UnixMilli(at).UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}
