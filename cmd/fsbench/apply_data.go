package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

var benchKinds = events.Kinds(events.ChannelEvents)

// applyData is the apply benchmark's data: records base records (record i
// has kind benchKinds[i%len], version i+1) and the changes of the staged
// download after them (versions records+1...).
type applyData struct {
	records                   int
	updates, inserts, deletes int
	changes                   []projections.Change
	// probe is the update of the first record of kind "event": the first
	// row of a kind-"event" query, whatever else the download changes.
	probe projections.Change
	// deleted marks the base records the download deletes.
	deleted  map[int]bool
	bodySize int
	pad      string
	at       int64
}

func newApplyData(records, changes, bodySize int) *applyData {
	d := &applyData{records: records, bodySize: bodySize, at: time.Now().Add(-24 * time.Hour).UnixMilli(),
		pad: strings.Repeat("lorem ipsum dolor sit amet ", bodySize/27+1)}
	d.updates, d.deletes = changes*80/100, changes*4/100
	d.inserts = changes - d.updates - d.deletes
	rng := rand.New(rand.NewSource(2))
	// Distinct existing records to update, then to delete; record 0 (the
	// probe) is updated.
	perm := rng.Perm(records)
	for i, v := range perm {
		if v == 0 {
			perm[0], perm[i] = perm[i], perm[0]
			break
		}
	}
	type op struct {
		idx     int
		deleted bool
	}
	ops := make([]op, 0, changes)
	for _, idx := range perm[:d.updates] {
		ops = append(ops, op{idx: idx})
	}
	d.deleted = map[int]bool{}
	for _, idx := range perm[d.updates : d.updates+d.deletes] {
		ops = append(ops, op{idx: idx, deleted: true})
		d.deleted[idx] = true
	}
	for i := 0; i < d.inserts; i++ {
		ops = append(ops, op{idx: records + i})
	}
	rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	d.changes = make([]projections.Change, len(ops))
	for j, o := range ops {
		seq := uint64(records + j + 1)
		c := d.change(o.idx, seq, 1)
		if o.deleted {
			c.Deleted, c.Body = true, nil
		}
		d.changes[j] = c
		if o.idx == 0 {
			d.probe = c
		}
	}
	return d
}

func benchRecordID(kind string, idx int) string {
	return fmt.Sprintf("%s-%s-%09d", benchUnit, kind, idx)
}

// change is record idx at version seq, revision rev of its body.
func (d *applyData) change(idx int, seq uint64, rev int) projections.Change {
	kind := benchKinds[idx%len(benchKinds)]
	a := events.Address{OrgUnit: benchUnit, Channel: events.ChannelEvents, Kind: kind, RecordID: benchRecordID(kind, idx)}
	return projections.Change{Seq: seq, Addr: a, EventID: fmt.Sprintf("bench-%d", seq), Body: d.body(a.RecordID, idx, rev),
		UpdatedAt: d.at + int64(seq)}
}

// baseChanges returns base records [from, to) at their initial versions.
func (d *applyData) baseChanges(from, to int) []projections.Change {
	out := make([]projections.Change, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, d.change(i, uint64(i+1), 0))
	}
	return out
}

// body is a msgpack map of about d.bodySize bytes, the same for the same
// (idx, rev).
func (d *applyData) body(id string, idx, rev int) []byte {
	m := map[string]any{"title": "record " + id, "org_unit": benchUnit, "rev": rev,
		"status":   []string{"open", "in_progress", "closed"}[(idx+rev)%3],
		"location": fmt.Sprintf("site-%02d", idx%40), "assignee": fmt.Sprintf("user%03d", (idx*7+rev)%200)}
	enc, _ := msgpack.Marshal(m)
	if pad := d.bodySize - len(enc) - 8; pad > 0 {
		m["notes"] = d.pad[:min(pad, len(d.pad))]
		enc, _ = msgpack.Marshal(m)
	}
	return enc
}

type rawApply struct {
	rows    int
	seconds float64
}

// measureRawApply is the limit the merge is compared with: a plain SQLite
// database with the events table's shape and indexes, bulk loaded with the
// same records, then the same changes written in one transaction (upsert
// if newer, delete if older) followed by a WAL checkpoint.
func measureRawApply(ctx context.Context, path string, d *applyData) (rawApply, error) {
	var res rawApply
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-65536)&_pragma=temp_store(MEMORY)")
	if err != nil {
		return res, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (org_unit TEXT NOT NULL, kind TEXT NOT NULL, record_id TEXT NOT NULL,
		version INTEGER NOT NULL, event_id TEXT NOT NULL, origin TEXT NOT NULL DEFAULT '', updated_at INTEGER NOT NULL, body BLOB NOT NULL)`); err != nil {
		return res, err
	}
	start := time.Now()
	const txRows = 100_000
	for i := 0; i < d.records; i += txRows {
		err := rawTx(ctx, db, `INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, "", func(ins, _ *sql.Stmt) error {
			for _, c := range d.baseChanges(i, min(i+txRows, d.records)) {
				a := c.Addr
				if _, err := ins.ExecContext(ctx, a.OrgUnit, a.Kind, a.RecordID, int64(c.Seq), c.EventID, "", c.UpdatedAt, c.Body); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	for _, q := range []string{`CREATE UNIQUE INDEX t_key ON t (org_unit, kind, record_id)`, `CREATE INDEX t_recent ON t (kind, updated_at)`,
		`PRAGMA wal_checkpoint(TRUNCATE)`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return res, fmt.Errorf("%s: %w", strings.Fields(q)[0], err)
		}
	}
	fmt.Printf("  raw SQLite copy loaded with %d records in %s\n", d.records, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	err = rawTx(ctx, db, `INSERT INTO t (org_unit, kind, record_id, version, event_id, origin, updated_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_unit, kind, record_id) DO UPDATE SET version = excluded.version, event_id = excluded.event_id,
		origin = excluded.origin, updated_at = excluded.updated_at, body = excluded.body WHERE excluded.version > t.version`,
		`DELETE FROM t WHERE org_unit = ? AND kind = ? AND record_id = ? AND version < ?`, func(up, del *sql.Stmt) error {
			for _, c := range d.changes {
				a := c.Addr
				var err error
				if c.Deleted {
					_, err = del.ExecContext(ctx, a.OrgUnit, a.Kind, a.RecordID, int64(c.Seq))
				} else {
					_, err = up.ExecContext(ctx, a.OrgUnit, a.Kind, a.RecordID, int64(c.Seq), c.EventID, c.OriginID, c.UpdatedAt, c.Body)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	if err != nil {
		return res, err
	}
	if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return res, err
	}
	res.rows, res.seconds = len(d.changes), time.Since(start).Seconds()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil {
		return res, err
	}
	if want := d.records + d.inserts - d.deletes; n != want {
		return res, fmt.Errorf("raw copy holds %d rows after the changes, want %d", n, want)
	}
	return res, nil
}

// rawTx runs fn in one transaction with q1 (and q2 unless empty) prepared.
func rawTx(ctx context.Context, db *sql.DB, q1, q2 string, fn func(s1, s2 *sql.Stmt) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	s1, err := tx.PrepareContext(ctx, q1)
	if err != nil {
		return err
	}
	defer s1.Close()
	var s2 *sql.Stmt
	if q2 != "" {
		if s2, err = tx.PrepareContext(ctx, q2); err != nil {
			return err
		}
		defer s2.Close()
	}
	if err := fn(s1, s2); err != nil {
		return err
	}
	return tx.Commit()
}

// randomKey returns the key of a random base record.
func (d *applyData) randomKey(rng *rand.Rand) store.Key {
	idx := rng.Intn(d.records)
	kind := benchKinds[idx%len(benchKinds)]
	return store.Key{OrgUnit: benchUnit, Kind: kind, RecordID: benchRecordID(kind, idx)}
}

// keptKey returns the key of a random base record the download does not
// delete, other than the probe.
func (d *applyData) keptKey(rng *rand.Rand) store.Key {
	for {
		if idx := rng.Intn(d.records); idx != 0 && !d.deleted[idx] {
			kind := benchKinds[idx%len(benchKinds)]
			return store.Key{OrgUnit: benchUnit, Kind: kind, RecordID: benchRecordID(kind, idx)}
		}
	}
}
