package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

var wantEventIndexes = []string{"records_events_key", "records_events_recent"}

func mustBeginBulk(tb testing.TB, db *store.DB, ch events.Channel) bool {
	tb.Helper()
	ok, err := db.BeginBulk(context.Background(), ch)
	if err != nil {
		tb.Fatalf("begin bulk %s: %v", ch, err)
	}
	return ok
}

func mustInBulk(tb testing.TB, db *store.DB, ch events.Channel) bool {
	tb.Helper()
	in, err := db.InBulk(context.Background(), ch)
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

// snapshotChanges returns n upserts of distinct events records of unit north,
// sequences 1..n.
func snapshotChanges(tb testing.TB, n int) []projections.Change {
	tb.Helper()
	out := make([]projections.Change, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, upsertAt(tb, uint64(i), "north", ev, "event", fmt.Sprintf("r%04d", i), map[string]any{"i": i}))
	}
	return out
}

func TestDB_BeginBulk(t *testing.T) {
	db := mustOpenDB(t)
	if !mustBeginBulk(t, db, ev) {
		t.Fatal("BeginBulk on an empty table returned false")
	}
	if !mustInBulk(t, db, ev) {
		t.Fatal("InBulk false after BeginBulk")
	}
	if got := indexes(t, db.Path(), "records_events"); len(got) != 0 {
		t.Fatalf("indexes kept in bulk mode: %v", got)
	}
	// A table already in bulk mode stays in it.
	if !mustBeginBulk(t, db, ev) {
		t.Fatal("BeginBulk on a table in bulk mode returned false")
	}
	// Other channels are untouched.
	if mustInBulk(t, db, events.ChannelAdmin) {
		t.Fatal("admin in bulk mode")
	}

	// A table with rows is never put in bulk mode.
	mustApply(t, db, batch("", events.ChannelAdmin, []projections.Change{
		upsertAt(t, 1, "", events.ChannelAdmin, "setting", "s1", map[string]any{"v": 1}),
	}))
	if mustBeginBulk(t, db, events.ChannelAdmin) {
		t.Fatal("BeginBulk on a table with rows returned true")
	}
	if mustInBulk(t, db, events.ChannelAdmin) {
		t.Fatal("table with rows put in bulk mode")
	}
	if got := indexes(t, db.Path(), "records_admin"); len(got) != 2 {
		t.Fatalf("refused BeginBulk dropped indexes: %v", got)
	}
}

func TestDB_Apply_Bulk(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	if !mustBeginBulk(t, db, ev) {
		t.Fatal("BeginBulk returned false")
	}
	// 150 rows: more than two full multi-row INSERTs plus a partial one.
	changes := snapshotChanges(t, 150)
	changes = append(changes, deleteAt(151, "north", ev, "event", "gone"), deleteAt(152, "north", ev, "event", "r0001"))
	b := batch("north", ev, changes)
	b.Bulk = true
	mustApply(t, db, b)
	if got := mustCount(t, db, store.Query{Channel: ev, Unit: store.AnyUnit}); got != 150 {
		t.Fatalf("bulk apply stored %d rows, want 150 (deletes skipped)", got)
	}
	if _, ok := recordByID(t, db, "north", ev, "r0001"); !ok {
		t.Fatal("a delete in bulk mode removed r0001")
	}
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 152 {
		t.Fatalf("checkpoint %+v, want LastSeq 152", cp)
	}
	if got := indexes(t, db.Path(), "records_events"); len(got) != 0 {
		t.Fatalf("indexes present before EndBulk: %v", got)
	}

	if err := db.EndBulk(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if mustInBulk(t, db, ev) {
		t.Fatal("InBulk true after EndBulk")
	}
	if got := indexes(t, db.Path(), "records_events"); !reflect.DeepEqual(got, wantEventIndexes) {
		t.Fatalf("indexes after EndBulk = %v, want %v", got, wantEventIndexes)
	}

	// The unique key is back: a non-bulk change to an existing record upserts.
	mustApply(t, db, batch("north", ev, []projections.Change{
		upsertAt(t, 200, "north", ev, "event", "r0002", map[string]any{"i": "updated"}),
		deleteAt(201, "north", ev, "event", "r0003"),
	}))
	if got := mustCount(t, db, store.Query{Channel: ev, Unit: store.AnyUnit}); got != 149 {
		t.Fatalf("after upsert+delete: %d rows, want 149", got)
	}
	r, ok := recordByID(t, db, "north", ev, "r0002")
	if !ok || r.Version != 200 || r.Body["i"] != "updated" {
		t.Fatalf("r0002 = %+v, want version 200", r)
	}
}

func TestDB_EndBulk_KeepsHighestVersionOfDuplicates(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	mustBeginBulk(t, db, ev)
	// A caller breaking the contract appends one record twice.
	b := batch("north", ev, []projections.Change{
		upsertAt(t, 3, "north", ev, "event", "dup", map[string]any{"v": "old"}),
		upsertAt(t, 7, "north", ev, "event", "dup", map[string]any{"v": "new"}),
		upsertAt(t, 8, "north", ev, "event", "single", map[string]any{"v": 1}),
	})
	b.Bulk = true
	mustApply(t, db, b)
	if err := db.EndBulk(ctx, ev); err != nil {
		t.Fatalf("EndBulk with duplicate rows: %v", err)
	}
	if got := mustCount(t, db, store.Query{Channel: ev, Unit: store.AnyUnit}); got != 2 {
		t.Fatalf("%d rows after EndBulk, want 2", got)
	}
	r, ok := recordByID(t, db, "north", ev, "dup")
	if !ok || r.Version != 7 || r.Body["v"] != "new" {
		t.Fatalf("dup = %+v, want version 7", r)
	}
	if got := indexes(t, db.Path(), "records_events"); !reflect.DeepEqual(got, wantEventIndexes) {
		t.Fatalf("indexes = %v", got)
	}
}

func TestOpen_FinishesInterruptedBulk(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "device.db")
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := db.BeginBulk(ctx, ev); err != nil || !ok {
		t.Fatalf("BeginBulk = %v, %v", ok, err)
	}
	b := batch("north", ev, snapshotChanges(t, 100))
	b.Bulk = true
	if _, err := db.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Crash: no EndBulk.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if got := indexes(t, path, "records_events"); len(got) != 0 {
		t.Fatalf("indexes present before recovery: %v", got)
	}

	db = mustOpenPath(t, path)
	if mustInBulk(t, db, ev) {
		t.Fatal("still in bulk mode after Open")
	}
	if got := indexes(t, path, "records_events"); !reflect.DeepEqual(got, wantEventIndexes) {
		t.Fatalf("indexes after Open = %v, want %v", got, wantEventIndexes)
	}
	if got := mustCount(t, db, store.Query{Channel: ev, Unit: store.AnyUnit}); got != 100 {
		t.Fatalf("%d rows after recovery, want 100", got)
	}
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 100 || cp.Applied != 100 {
		t.Fatalf("checkpoint after recovery %+v", cp)
	}
}
