package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

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

// Results of the device's writes that arrive while the channel is in bulk
// mode (its unique index dropped) end up in the store like any other,
// whether the load ends normally or the agent crashes during it.
func TestDB_ApplyResults_DuringBulkLoad(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "device.db")
			db, err := store.Open(ctx, path, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			write := func(id, mut string) {
				if _, err := db.LocalWrite(ctx, store.Write{Addr: events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: id},
					Op: events.OpUpsert, Body: mustBody(t, map[string]any{"mine": id})}, mut, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			write("mine", "m1")  // a new record, accepted
			write("r0002", "m2") // a record the snapshot also brings, accepted at a newer version
			write("r0003", "m3") // a conflict: the server's state comes with the result
			mustBeginBulk(t, db, ev)
			_, err = db.ApplyResults(ctx, store.ResultsBatch{LastSeq: 7, Now: time.Now(), Results: []*events.Result{
				{DeviceID: "tab1", MutationID: "m1", Status: events.Accepted, Version: 120, At: 1},
				{DeviceID: "tab1", MutationID: "m2", Status: events.Accepted, Version: 150, At: 1},
				{DeviceID: "tab1", MutationID: "m3", Status: events.Conflict, ServerVersion: 160,
					ServerBody: mustBody(t, map[string]any{"server": true}), At: 1}}})
			if err != nil {
				t.Fatalf("results during the bulk load: %v", err)
			}
			if r, ok := recordByID(t, db, "north", ev, "mine"); !ok || !r.Pending {
				t.Fatalf("during the load the accepted write shows as %+v (found %v); want it still pending", r, ok)
			}
			b := batch("north", ev, snapshotChanges(t, 100))
			b.Bulk = true
			mustApply(t, db, b)
			if crash {
				db.Close() // no EndBulk: Open finishes the load
				db = mustOpenPath(t, path)
			} else {
				t.Cleanup(func() { db.Close() })
				if err := db.EndBulk(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}

			if seq, err := db.ResultsCheckpoint(ctx); err != nil || seq != 7 {
				t.Fatalf("results checkpoint %d, %v; want 7", seq, err)
			}
			for id, want := range map[string]uint64{"mine": 120, "r0002": 150} {
				r, ok := recordByID(t, db, "north", ev, id)
				if !ok || r.Pending || r.Version != want || r.Body["mine"] != id {
					t.Errorf("%s: %+v (found %v); want the accepted write at version %d", id, r, ok, want)
				}
			}
			if n := mustCount(t, db, store.Query{Channel: ev, Unit: "north"}); n != 101 {
				t.Errorf("%d records, want the 100 of the snapshot and the new one", n)
			}
			cs, err := db.Conflicts(ctx)
			if err != nil || len(cs) != 1 || cs[0].MutationID != "m3" || cs[0].ServerVersion != 160 {
				t.Fatalf("conflicts %+v, %v; want m3 against server version 160", cs, err)
			}
			if c, err := db.OutboxCounts(ctx); err != nil || c[store.StateSent]+c[store.StateQueued] != 0 {
				t.Fatalf("outbox %v, %v; want nothing left unconfirmed", c, err)
			}
		})
	}
}
