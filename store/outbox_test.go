package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// TestDB_MarkSentAll: the named queued mutations become sent, in one
// step; the others stay queued, and Queued no longer lists the sent ones.
func TestDB_MarkSentAll(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	for i := range 5 {
		a := events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: fmt.Sprint("r", i)}
		if _, err := db.LocalWrite(ctx, store.Write{Addr: a, Op: events.OpUpsert, Body: mustBody(t, map[string]any{"i": i})},
			fmt.Sprint("m", i), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	before := db.Commits()
	if err := db.MarkSentAll(ctx, []string{"m0", "m2", "m4", "no-such"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if db.Commits() == before {
		t.Error("MarkSentAll committed nothing the store counts")
	}
	counts, err := db.OutboxCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[store.StateSent] != 3 || counts[store.StateQueued] != 2 {
		t.Fatalf("outbox states %v, want 3 sent and 2 queued", counts)
	}
	q, err := db.Queued(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].MutationID != "m1" || q[1].MutationID != "m3" {
		t.Fatalf("queued %+v, want m1 and m3", q)
	}
}
