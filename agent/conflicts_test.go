package agent

import (
	"context"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

// twoDevices returns two synced devices of unit north sharing record id,
// created on the server.
func twoDevices(t *testing.T, id string) (*fstest.Broker, *Syncer, *Syncer) {
	t.Helper()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"by": "server"}))
	startIngest(t, b, ingest.Rights{})
	a := NewSyncer(testConfig("tabA", "north"), deviceClient(t, b, testConfig("tabA", "north")), mustOpenDB(t), nil)
	c := NewSyncer(testConfig("tabB", "north"), deviceClient(t, b, testConfig("tabB", "north")), mustOpenDB(t), nil)
	for _, s := range []*Syncer{a, c} {
		if _, err := s.Sync(context.Background(), ScopeFull); err != nil {
			t.Fatal(err)
		}
	}
	return b, a, c
}

// conflictOf makes device b's write to id lose against device a's and
// returns b's sync error.
func conflictOf(t *testing.T, a, b *Syncer, id string, aBody map[string]any) store.Conflict {
	t.Helper()
	mustWrite(t, a, "north", "event", id, aBody)
	mustWrite(t, b, "north", "event", id, map[string]any{"by": "B"})
	settle(t, a)
	settle(t, b)
	cs, err := b.db.Conflicts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].State != store.StateConflict || cs[0].RecordID != id {
		t.Fatalf("conflicts of B: %+v, want one conflict on %s", cs, id)
	}
	return cs[0]
}

// requireAgree syncs both devices and checks each equals the server.
func requireAgree(t *testing.T, b *fstest.Broker, devices ...*Syncer) {
	t.Helper()
	for _, s := range devices {
		settle(t, s)
	}
	server := freshView(t, b, "north")
	for _, s := range devices {
		if _, err := s.Sync(context.Background(), ScopeFull); err != nil {
			t.Fatal(err)
		}
		requireSameState(t, s.db, server)
	}
}

func TestDB_Resolve_Undo(t *testing.T) {
	b, devA, devB := twoDevices(t, "e1")
	c := conflictOf(t, devA, devB, "e1", map[string]any{"by": "A"})
	if c.ServerBody["by"] != "A" || c.LocalBody["by"] != "B" {
		t.Fatalf("conflict should show both versions: %+v", c)
	}
	if _, err := devB.db.Resolve(context.Background(), c.MutationID, store.ResolveUndo, "mundo", time.Now()); err != nil {
		t.Fatal(err)
	}
	requireAgree(t, b, devA, devB)
	if view := freshView(t, b, "north"); len(view) != 1 {
		t.Fatalf("server holds %d records", len(view))
	}
}

func TestDB_Resolve_Retry(t *testing.T) {
	b, devA, devB := twoDevices(t, "e1")
	c := conflictOf(t, devA, devB, "e1", map[string]any{"by": "A"})
	if _, err := devB.db.Resolve(context.Background(), c.MutationID, store.ResolveRetry, "mretry", time.Now()); err != nil {
		t.Fatal(err)
	}
	requireAgree(t, b, devA, devB)
	recs, _ := devA.db.Records(context.Background(), store.Query{Channel: events.ChannelEvents, Unit: "north"})
	if len(recs) != 1 || recs[0].Body["by"] != "B" {
		t.Fatalf("after retry the server should hold B's change, device A sees %+v", recs)
	}
}

func TestDB_Resolve_Undelete(t *testing.T) {
	b, devA, devB := twoDevices(t, "e1")
	c := conflictOf(t, devA, devB, "e1", nil) // A deletes the record
	if !c.ServerDeleted {
		t.Fatalf("conflict should say the server deleted the record: %+v", c)
	}
	if _, err := devB.db.Resolve(context.Background(), c.MutationID, store.ResolveUndelete, "mundel", time.Now()); err != nil {
		t.Fatal(err)
	}
	requireAgree(t, b, devA, devB)
	recs, _ := devA.db.Records(context.Background(), store.Query{Channel: events.ChannelEvents, Unit: "north"})
	if len(recs) != 1 || recs[0].Body["by"] != "B" {
		t.Fatalf("after undelete the record should be back with B's change, device A sees %+v", recs)
	}
}

func TestSyncer_Upload_RejectedWriteDoesNotBlockQueue(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	startIngest(t, b, ingest.Rights{})
	s := NewSyncer(testConfig("tab1", "north"), deviceClient(t, b, testConfig("tab1", "north")), mustOpenDB(t), nil)
	mustWrite(t, s, "north", "event", "before", map[string]any{"i": 1})
	if _, err := s.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "admin", Kind: "setting", RecordID: "s1", Body: map[string]any{"v": 1}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"after1", "after2"} {
		mustWrite(t, s, "north", "event", id, map[string]any{"i": 2})
	}
	settle(t, s)
	cs, err := s.db.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].State != store.StateRejected || cs[0].Reason != events.ReasonNotAllowed || cs[0].RecordID != "s1" {
		t.Fatalf("sync errors %+v: want the admin write rejected as not_allowed", cs)
	}
	applied := map[string]bool{}
	for _, e := range deviceChanges(t, b, "north") {
		applied[e.RecordID] = true
	}
	if !applied["before"] || !applied["after1"] || !applied["after2"] || applied["s1"] {
		t.Fatalf("server applied %v", applied)
	}
	if _, err := s.db.Resolve(ctx, cs[0].MutationID, store.ResolveRetry, "mx", time.Now()); err == nil {
		t.Fatal("retrying a rejected write should be refused")
	}
}

func TestSyncer_Results_RetainEvents(t *testing.T) {
	ctx := context.Background()
	for _, days := range []int{0, 7} {
		b := fstest.MustStartBroker(t, "north")
		startIngest(t, b, ingest.Rights{})
		cfg := testConfig("tab1", "north")
		cfg.RetainEventsDays = &days
		s := NewSyncer(cfg, deviceClient(t, b, cfg), mustOpenDB(t), nil)
		mustWrite(t, s, "north", "event", "mine", map[string]any{"i": 1})
		settle(t, s)
		n, err := s.db.PurgeRetained(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		left, _ := s.db.Count(ctx, store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit})
		if days == 0 && (n != 1 || left != 0) {
			t.Fatalf("retain off: purged %d, %d left; want the accepted event removed at once", n, left)
		}
		if days == 7 && (n != 0 || left != 1) {
			t.Fatalf("retain 7 days: purged %d, %d left; want it kept", n, left)
		}
		if days == 7 {
			if n, _ := s.db.PurgeRetained(ctx, time.Now().Add(8*24*time.Hour)); n != 1 {
				t.Fatalf("after 8 days purged %d, want 1", n)
			}
		}
	}
}
