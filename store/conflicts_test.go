package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// TestDB_Conflicts_UnreadableServerBody: a conflict whose server body an
// older ingest sent as a poison map (here a NaN, which JSON cannot carry)
// is listed without that body instead of breaking the listing.
func TestDB_Conflicts_UnreadableServerBody(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	addr := events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "r1"}
	m, err := db.LocalWrite(ctx, store.Write{Addr: addr, Op: events.OpUpsert, Body: mustBody(t, map[string]any{"mine": 1})}, "m1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.MarkSent(ctx, m.MutationID, time.Now()); err != nil {
		t.Fatal(err)
	}
	nan := []byte{0x81, 0xa1, 'f', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1} // {"f": NaN}
	res := &events.Result{DeviceID: "tab1", MutationID: "m1", Status: events.Conflict, ServerVersion: 7, ServerBody: nan, At: 1}
	if _, err := db.ApplyResults(ctx, store.ResultsBatch{Results: []*events.Result{res}, LastSeq: 1, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cs, err := db.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].ServerBody != nil || cs[0].LocalBody["mine"] == nil || cs[0].ServerVersion != 7 {
		t.Fatalf("conflicts = %+v, want m1 with its local body and no server body", cs)
	}
	if _, err := json.Marshal(cs); err != nil {
		t.Fatalf("conflicts do not encode as JSON: %v", err)
	}
	if _, err := json.Marshal(mustRecords(t, db, store.Query{Channel: ev, Unit: store.AnyUnit})); err != nil {
		t.Fatalf("records do not encode as JSON: %v", err)
	}
}
