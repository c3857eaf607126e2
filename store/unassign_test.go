package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// TestDB_Unassign: removing north takes its records and checkpoints and
// turns its queued write into a rejected sync error; south and the
// tenant-wide data stay, and so does south's queued write.
func TestDB_Unassign(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	ev, adm := events.ChannelEvents, events.ChannelAdmin
	mustApply(t, db, batch("north", ev, []projections.Change{upsertAt(t, 1, "north", ev, "event", "n1", map[string]any{"a": 1})}))
	mustApply(t, db, batch("south", ev, []projections.Change{upsertAt(t, 1, "south", ev, "event", "s1", map[string]any{"a": 1})}))
	mustApply(t, db, batch("", adm, []projections.Change{upsertAt(t, 1, "", adm, "setting", "t1", map[string]any{"a": 1})}))
	write := func(unit, id string) store.Mutation {
		m, err := db.LocalWrite(ctx, store.Write{Addr: events.Address{OrgUnit: unit, Channel: ev, Kind: "event", RecordID: id},
			Op: events.OpUpsert, Body: mustBody(t, map[string]any{"x": 1})}, "m-"+id, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	mn, ms := write("north", "n2"), write("south", "s2")
	if held, err := db.HeldUnits(ctx); err != nil || !slices.Equal(held, []string{"", "north", "south"}) {
		t.Fatalf("held units %v (%v), want tenant, north, south", held, err)
	}
	r, err := db.Unassign(ctx, "north", "north withdrawn", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Records != 1 || len(r.Failed) != 1 || r.Failed[0].MutationID != mn.MutationID || r.Failed[0].State != store.StateRejected {
		t.Fatalf("report %+v: want n1 removed and %s failed", r, mn.MutationID)
	}
	// Only the failed write is left of north, as the user's own pending
	// change beside its sync error (until Undo).
	if got := mustRecords(t, db, store.Query{Channel: ev, Unit: "north"}); len(got) != 1 || got[0].RecordID != "n2" || !got[0].Pending {
		t.Fatalf("north records %+v, want only the pending n2", got)
	}
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 0 {
		t.Fatalf("north checkpoint %+v left", cp)
	}
	if n := mustCount(t, db, store.Query{Channel: ev, Unit: "south"}); n != 2 { // s1 and the pending s2
		t.Fatalf("south has %d records, want 2", n)
	}
	if n := mustCount(t, db, store.Query{Channel: adm, Unit: ""}); n != 1 {
		t.Fatalf("tenant data has %d records, want 1", n)
	}
	cs, err := db.Conflicts(ctx)
	if err != nil || len(cs) != 1 || cs[0].MutationID != mn.MutationID || cs[0].Reason != events.ReasonNotAllowed || cs[0].Message != "north withdrawn" {
		t.Fatalf("sync errors %+v (%v), want the north write rejected not_allowed", cs, err)
	}
	q, err := db.Queued(ctx, 10)
	if err != nil || len(q) != 1 || q[0].MutationID != ms.MutationID {
		t.Fatalf("queued %+v (%v), want only the south write", q, err)
	}
	if held, _ := db.HeldUnits(ctx); slices.Contains(held, "north") {
		t.Fatalf("north still held: %v", held)
	}
	if _, err := db.Unassign(ctx, "", "x", time.Now()); err == nil {
		t.Fatal("unassigning the tenant-wide data succeeded")
	}
}
