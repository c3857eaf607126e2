package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sort"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// mustOpenDB opens a fresh database in a temporary directory and closes it
// when the test ends.
func mustOpenDB(tb testing.TB) *store.DB {
	tb.Helper()
	return mustOpenPath(tb, filepath.Join(tb.TempDir(), "device.db"))
}

// mustOpenPath opens the database at path and closes it when the test ends.
func mustOpenPath(tb testing.TB, path string) *store.DB {
	tb.Helper()
	db, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// mustRawDB opens path with the SQLite driver directly, bypassing the store,
// for inspecting what the store wrote (sqlite_master, user_version).
func mustRawDB(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	raw, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		tb.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	tb.Cleanup(func() { raw.Close() })
	return raw
}

// indexes returns the names of the indexes on table in the file at path.
func indexes(tb testing.TB, path, table string) []string {
	tb.Helper()
	raw := mustRawDB(tb, path)
	rows, err := raw.Query(`SELECT name FROM sqlite_master WHERE type='index' AND tbl_name = ? ORDER BY name`, table)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			tb.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	raw.Close()
	return out
}

func mustBody(tb testing.TB, m map[string]any) []byte {
	tb.Helper()
	b, err := msgpack.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// upsertAt returns an upsert of (unit, ch, kind, id) at stream sequence seq.
func upsertAt(tb testing.TB, seq uint64, unit string, ch events.Channel, kind, id string, body map[string]any) projections.Change {
	tb.Helper()
	return projections.Change{Seq: seq, Addr: events.Address{OrgUnit: unit, Channel: ch, Kind: kind, RecordID: id},
		EventID: fmt.Sprintf("ev-%s-%d", id, seq), Body: mustBody(tb, body),
		UpdatedAt: 1_700_000_000_000 + int64(seq)}
}

// deleteAt returns a delete of (unit, ch, kind, id) at stream sequence seq.
func deleteAt(seq uint64, unit string, ch events.Channel, kind, id string) projections.Change {
	return projections.Change{Seq: seq, Addr: events.Address{OrgUnit: unit, Channel: ch, Kind: kind, RecordID: id},
		EventID: fmt.Sprintf("del-%s-%d", id, seq), Deleted: true, UpdatedAt: 1_700_000_000_000 + int64(seq)}
}

// batch builds a store batch of (unit, ch) whose LastSeq is the highest
// sequence among changes and rejects.
func batch(unit string, ch events.Channel, changes []projections.Change, rejects ...projections.Reject) store.Batch {
	b := store.Batch{Unit: unit, Channel: ch, Batch: projections.Batch{Changes: changes, Rejects: rejects}}
	for _, c := range changes {
		b.LastSeq = max(b.LastSeq, c.Seq)
	}
	for _, r := range rejects {
		b.LastSeq = max(b.LastSeq, r.Seq)
	}
	return b
}

func mustApply(tb testing.TB, db *store.DB, b store.Batch) int {
	tb.Helper()
	n, err := db.Apply(context.Background(), b)
	if err != nil {
		tb.Fatalf("apply: %v", err)
	}
	return n
}

func mustCheckpoint(tb testing.TB, db *store.DB, unit string, ch events.Channel) store.Checkpoint {
	tb.Helper()
	cp, err := db.Checkpoint(context.Background(), unit, ch)
	if err != nil {
		tb.Fatal(err)
	}
	return cp
}

func mustRecords(tb testing.TB, db *store.DB, q store.Query) []store.Record {
	tb.Helper()
	recs, err := db.Records(context.Background(), q)
	if err != nil {
		tb.Fatalf("records %+v: %v", q, err)
	}
	return recs
}

func mustCount(tb testing.TB, db *store.DB, q store.Query) int {
	tb.Helper()
	n, err := db.Count(context.Background(), q)
	if err != nil {
		tb.Fatalf("count %+v: %v", q, err)
	}
	return n
}

// snapshot is a comparable view of one record.
type snapshot struct {
	Unit, Kind, ID string
	Version        uint64
	EventID        string
	Body           string
}

// allRecords returns every record of ch, all units, as comparable values.
func allRecords(tb testing.TB, db *store.DB, ch events.Channel) []snapshot {
	tb.Helper()
	var out []snapshot
	for _, r := range mustRecords(tb, db, store.Query{Channel: ch, Unit: store.AnyUnit, Limit: 10000}) {
		out = append(out, snapshot{r.OrgUnit, r.Kind, r.RecordID, r.Version, r.EventID, string(r.RawBody)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unit+out[i].Kind+out[i].ID < out[j].Unit+out[j].Kind+out[j].ID })
	return out
}

// recordByID returns record id of (unit, ch) and whether it exists.
func recordByID(tb testing.TB, db *store.DB, unit string, ch events.Channel, id string) (store.Record, bool) {
	tb.Helper()
	for _, r := range mustRecords(tb, db, store.Query{Channel: ch, Unit: unit, Limit: 10000}) {
		if r.RecordID == id {
			return r, true
		}
	}
	return store.Record{}, false
}
