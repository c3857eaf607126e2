package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
)

// Record is one record of a channel projection as the app reads it.
type Record struct {
	OrgUnit   string         `json:"org_unit"`
	Channel   events.Channel `json:"channel"`
	Kind      string         `json:"kind"`
	RecordID  string         `json:"id"`
	Version   uint64         `json:"version"`
	EventID   string         `json:"event_id"`
	Origin    string         `json:"origin,omitempty"`
	UpdatedAt time.Time      `json:"updated_at"`
	Body      map[string]any `json:"body"`
	// Pending is set on the device's own change not yet confirmed by the
	// server; Version is then the server version it was based on.
	Pending bool `json:"pending,omitempty"`
	// RawBody is the msgpack encoding Body was decoded from.
	RawBody []byte `json:"-"`
}

// Query selects records of one channel.
type Query struct {
	Channel events.Channel
	Kind    string // optional
	// Unit filters on one org unit: [AnyUnit] selects all units, "" (the
	// zero value) the tenant-wide data only.
	Unit string
	// RecordID selects one record (with Kind and Unit: a point lookup).
	RecordID string
	// After pages by key: only records ordered after this one (unit, kind,
	// id). Cheaper than Offset for deep pages.
	After  *Key
	Limit  int // default 100, at most 10,000
	Offset int
}

// Key orders records: by unit, kind, then id.
type Key struct {
	OrgUnit  string `json:"org_unit"`
	Kind     string `json:"kind"`
	RecordID string `json:"id"`
}

// AnyUnit in [Query.Unit] selects every unit.
const AnyUnit = "*"

// ErrBadQuery wraps every invalid [Query].
var ErrBadQuery = errors.New("store: bad query")

// Records returns the live view of the records matching q, ordered by
// unit, kind and id: the server state with the device's own unconfirmed
// changes on top (Pending set on those; a pending delete hides the record).
//
// A record whose stored body is not a valid record body (stored by an
// older build, see [events.ValidateBody]) is logged, counted in
// [DB.UnreadableRecords] and left out; the page is filled up with the
// records after it, so a page shorter than Limit is still the last one.
// Offset counts stored records, unreadable ones included: paging by
// [Query.After] is exact, paging by Offset past such a record repeats one
// record per record skipped.
func (db *DB) Records(ctx context.Context, q Query) ([]Record, error) {
	conds, args, err := q.conds()
	if err != nil {
		return nil, err
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, 10000)
	// One read transaction: the layers and the rows come from the same
	// snapshot, so an Apply or a merge step committing in between cannot
	// make a read mix two states.
	tx, err := db.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("store: records: %w", err)
	}
	defer tx.Rollback()
	l, err := layersOf(ctx, tx, q.Channel)
	if err != nil {
		return nil, err
	}
	arms, armArgs := liveArms(q.Channel, conds, args, l)
	query := strings.Join(arms, " UNION ALL ") + ` ORDER BY 1, 2, 3 LIMIT ? OFFSET ?`
	out := []Record{}
	for offset, want := q.Offset, q.Limit; want > 0; {
		read, skipped, err := db.readPage(ctx, tx, query, append(slices.Clip(armArgs), want, offset), q.Channel, &out)
		if err != nil || read < want {
			return out, err
		}
		offset, want = offset+read, skipped
	}
	return out, nil
}

// readPage runs one page of a listing, appends its readable records to
// out and returns how many rows it read and how many it skipped.
func (db *DB) readPage(ctx context.Context, tx *sql.Tx, query string, args []any, ch events.Channel, out *[]Record) (read, skipped int, err error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, 0, fmt.Errorf("store: records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		read++
		r, err := scanRecord(rows, ch)
		if err != nil {
			return read, skipped, err
		}
		// One record an older build stored with a body that cannot be
		// served must not fail the listing: it is reported and skipped.
		if err := r.decodeBody(); err != nil {
			db.unreadable.skip(r, err)
			skipped++
			continue
		}
		*out = append(*out, r)
	}
	return read, skipped, rows.Err()
}

// Count returns how many records of the live view match q (Limit and
// Offset ignored).
func (db *DB) Count(ctx context.Context, q Query) (int, error) {
	conds, args, err := q.conds()
	if err != nil {
		return 0, err
	}
	tx, err := db.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("store: count: %w", err)
	}
	defer tx.Rollback()
	l, err := layersOf(ctx, tx, q.Channel)
	if err != nil {
		return 0, err
	}
	arms, armArgs := liveArms(q.Channel, conds, args, l)
	for i, a := range arms {
		arms[i] = "(SELECT count(*) FROM (" + a + "))"
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT "+strings.Join(arms, " + "), armArgs...).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count: %w", err)
	}
	return n, nil
}

func (q Query) conds() ([]string, []any, error) {
	if !q.Channel.Valid() {
		return nil, nil, fmt.Errorf("%w: unknown channel %q", ErrBadQuery, q.Channel)
	}
	var conds []string
	var args []any
	if q.Unit != AnyUnit {
		conds, args = append(conds, "org_unit = ?"), append(args, q.Unit)
	}
	if q.Kind != "" {
		if err := events.ValidKind(q.Kind); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrBadQuery, err)
		}
		conds, args = append(conds, "kind = ?"), append(args, q.Kind)
	}
	if q.RecordID != "" {
		conds, args = append(conds, "record_id = ?"), append(args, q.RecordID)
	}
	switch a := q.After; {
	case a == nil:
	case q.Unit == a.OrgUnit && q.Kind == a.Kind:
		// Unit and kind are fixed: a plain range on the id uses the index.
		conds, args = append(conds, "record_id > ?"), append(args, a.RecordID)
	default:
		conds, args = append(conds, "(org_unit, kind, record_id) > (?, ?, ?)"), append(args, a.OrgUnit, a.Kind, a.RecordID)
	}
	return conds, args, nil
}

func where(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

func scanRecord(rows *sql.Rows, ch events.Channel) (Record, error) {
	r := Record{Channel: ch}
	var version, at int64
	if err := rows.Scan(&r.OrgUnit, &r.Kind, &r.RecordID, &version, &r.EventID, &r.Origin, &at, &r.RawBody, &r.Pending); err != nil {
		return r, fmt.Errorf("store: scan record: %w", err)
	}
	r.Version, r.UpdatedAt = uint64(version), time.UnixMilli(at).UTC()
	return r, nil
}

// decodeBody fills Body from RawBody if RawBody is a valid record body:
// one that decodes and can be served as JSON.
func (r *Record) decodeBody() error {
	if err := events.ValidateBody(r.RawBody); err != nil {
		return fmt.Errorf("store: record %s/%s body: %w", r.Kind, r.RecordID, err)
	}
	if err := msgpack.Unmarshal(r.RawBody, &r.Body); err != nil {
		return fmt.Errorf("store: record %s/%s body: %w", r.Kind, r.RecordID, err)
	}
	return nil
}

// SyncError is a message the device could not apply.
type SyncError struct {
	ID      int64          `json:"id"`
	At      time.Time      `json:"at"`
	Unit    string         `json:"org_unit"`
	Channel events.Channel `json:"channel"`
	Seq     uint64         `json:"seq"`
	Subject string         `json:"subject"`
	Code    string         `json:"code"`
	Message string         `json:"message"`
}

// SyncErrors returns the recorded sync errors, newest first, at most limit.
func (db *DB) SyncErrors(ctx context.Context, limit int) ([]SyncError, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT id, at, org_unit, channel, seq, subject, code, message
		FROM sync_errors ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: sync errors: %w", err)
	}
	defer rows.Close()
	out := []SyncError{}
	for rows.Next() {
		var e SyncError
		var at, seq int64
		if err := rows.Scan(&e.ID, &at, &e.Unit, &e.Channel, &seq, &e.Subject, &e.Code, &e.Message); err != nil {
			return nil, fmt.Errorf("store: sync errors: %w", err)
		}
		e.At, e.Seq = time.UnixMilli(at).UTC(), uint64(seq)
		out = append(out, e)
	}
	return out, rows.Err()
}

// CountSyncErrors returns how many sync errors are recorded.
func (db *DB) CountSyncErrors(ctx context.Context) (int, error) {
	var n int
	err := db.reader.QueryRowContext(ctx, `SELECT count(*) FROM sync_errors`).Scan(&n)
	return n, err
}

// Meta returns a device metadata value ("" if unset).
func (db *DB) Meta(ctx context.Context, key string) (string, error) {
	var v string
	err := db.reader.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// SetMeta stores a device metadata value.
func (db *DB) SetMeta(ctx context.Context, key, value string) error {
	_, err := db.writer.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err == nil {
		db.committed()
	}
	return err
}
