package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// TestDB_ApplyResults_ReportsDecided: ApplyResults returns one Decided per
// write a result decided, with its address, state and version; a result
// for a write the device does not hold, and one deferred by a bulk load,
// decide nothing now.
func TestDB_ApplyResults_ReportsDecided(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	addr := func(id string) events.Address {
		return events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: id}
	}
	for i, id := range []string{"a", "c", "r"} {
		if _, err := db.LocalWrite(ctx, store.Write{Addr: addr(id), Op: events.OpUpsert, Body: mustBody(t, map[string]any{"n": i})},
			"m-"+id, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.ApplyResults(ctx, store.ResultsBatch{LastSeq: 4, Now: time.Now(), Results: []*events.Result{
		{DeviceID: "tab1", MutationID: "m-a", Status: events.Accepted, Version: 11, At: 1},
		{DeviceID: "tab1", MutationID: "m-c", Status: events.Conflict, ServerVersion: 9, At: 1},
		{DeviceID: "tab1", MutationID: "m-r", Status: events.Rejected, Reason: events.ReasonNotAllowed, At: 1},
		{DeviceID: "tab1", MutationID: "m-unknown", Status: events.Accepted, Version: 3, At: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Decided{
		{MutationID: "m-a", Addr: addr("a"), State: store.StateAccepted, Version: 11},
		{MutationID: "m-c", Addr: addr("c"), State: store.StateConflict},
		{MutationID: "m-r", Addr: addr("r"), State: store.StateRejected, Reason: events.ReasonNotAllowed},
	}
	if len(got) != len(want) {
		t.Fatalf("decided = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("decided[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}

	// During a bulk load of the channel (a first download into an empty
	// table) a result is kept, not decided.
	db = mustOpenDB(t)
	if _, err := db.LocalWrite(ctx, store.Write{Addr: addr("b"), Op: events.OpUpsert, Body: mustBody(t, map[string]any{"n": 9})},
		"m-b", time.Now()); err != nil {
		t.Fatal(err)
	}
	if !mustBeginBulk(t, db, ev) {
		t.Fatal("no bulk mode on an empty table")
	}
	got, err = db.ApplyResults(ctx, store.ResultsBatch{LastSeq: 5, Now: time.Now(), Results: []*events.Result{
		{DeviceID: "tab1", MutationID: "m-b", Status: events.Accepted, Version: 12, At: 1}}})
	if err != nil || len(got) != 0 {
		t.Fatalf("during a bulk load: decided %+v, err %v; want nothing", got, err)
	}
}
