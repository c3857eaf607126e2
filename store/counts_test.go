package store_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

func mustLiveCount(tb testing.TB, db *store.DB, ch events.Channel) int {
	tb.Helper()
	n, err := db.LiveCount(context.Background(), ch)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestDB_LiveCount_KeptUntilNextCommit: the count is the live view's, is
// not counted again while nothing is written, and follows every kind of
// write (server changes, local writes, their results, a wipe).
func TestDB_LiveCount_KeptUntilNextCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "device.db")
	var commits atomic.Int64
	db, err := store.Open(ctx, path, store.Options{OnCommit: func() { commits.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ev := events.ChannelEvents
	mustApply(t, db, batch("north", ev, []projections.Change{
		upsertAt(t, 1, "north", ev, "event", "a", map[string]any{"n": 1}),
		upsertAt(t, 2, "north", ev, "event", "b", map[string]any{"n": 2}),
	}))
	check := func(step string, want int) {
		t.Helper()
		if n, c := mustLiveCount(t, db, ev), mustCount(t, db, store.Query{Channel: ev, Unit: store.AnyUnit}); n != want || c != want {
			t.Fatalf("%s: LiveCount %d, Count %d, want %d", step, n, c, want)
		}
	}
	check("after two server records", 2)
	if int64(db.Commits()) != commits.Load() || commits.Load() == 0 {
		t.Fatalf("Commits() %d, OnCommit told %d times", db.Commits(), commits.Load())
	}

	// A row written behind the store's back is not seen while nothing
	// commits through it: the count was not taken again.
	raw := mustRawDB(t, path)
	if _, err := raw.Exec(`INSERT INTO records_events (org_unit, kind, record_id, version, event_id, updated_at, body)
		VALUES ('north', 'event', 'behind', 99, 'x', 0, x'80')`); err != nil {
		t.Fatal(err)
	}
	before := db.Commits()
	for i := 0; i < 3; i++ {
		if n := mustLiveCount(t, db, ev); n != 2 {
			t.Fatalf("LiveCount %d with no commit through the store, want the kept 2", n)
		}
	}
	if db.Commits() != before {
		t.Fatal("reading counts committed something")
	}
	if _, err := raw.Exec(`DELETE FROM records_events WHERE record_id = 'behind'`); err != nil {
		t.Fatal(err)
	}

	w := store.Write{Addr: events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "c"}, Op: events.OpUpsert, Body: mustBody(t, map[string]any{"n": 3})}
	if _, err := db.LocalWrite(ctx, w, "m1", time.Now()); err != nil {
		t.Fatal(err)
	}
	check("after a local write", 3)
	del := store.Write{Addr: events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "a"}, Op: events.OpDelete}
	if _, err := db.LocalWrite(ctx, del, "m2", time.Now()); err != nil {
		t.Fatal(err)
	}
	check("after a local delete", 2)
	if _, err := db.ApplyResults(ctx, store.ResultsBatch{Now: time.Now(), Results: []*events.Result{
		{DeviceID: "tab1", MutationID: "m1", Status: events.Accepted, Version: 3},
		{DeviceID: "tab1", MutationID: "m2", Status: events.Accepted, Version: 4},
	}}); err != nil {
		t.Fatal(err)
	}
	check("after both were accepted", 2)
	if err := db.SetMeta(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if db.Commits() == before {
		t.Fatal("SetMeta not counted as a commit")
	}
	if _, err := db.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	check("after a wipe", 0)
}
