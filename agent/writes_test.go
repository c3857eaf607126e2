package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

func TestSyncer_Upload_OfflineWritesAppliedOnceInOrder(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	path := t.TempDir() + "/device.db"
	cfg := testConfig("tab1", "north")
	open := func() *store.DB {
		db, err := store.Open(ctx, path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	const writes, records = 1000, 100
	for i := 0; i < writes; i++ {
		if i == 333 || i == 666 { // the agent restarts twice while offline
			db.Close()
			db = open()
		}
		s := NewSyncer(cfg, nil, db, nil) // offline: no broker connection
		rec := fmt.Sprintf("r%03d", i%records)
		var body map[string]any
		if i < writes-records || i%3 != 0 { // some records end deleted
			body = map[string]any{"n": i}
		}
		mustWrite(t, s, "north", "event", rec, body)
	}
	if c, _ := db.OutboxCounts(ctx); c[store.StateQueued] != writes {
		t.Fatalf("queued after restarts: %v, want %d", c, writes)
	}
	defer db.Close()
	startIngest(t, b, ingest.Rights{})
	s := NewSyncer(cfg, deviceClient(t, b, cfg), db, nil)
	settle(t, s)

	applied := deviceChanges(t, b, "north")
	if len(applied) != writes {
		t.Fatalf("server applied %d device changes, want exactly %d", len(applied), writes)
	}
	seen, last := map[string]bool{}, map[string]int64{}
	for _, e := range applied {
		if seen[e.Origin.MutationID] {
			t.Fatalf("mutation %s applied twice", e.Origin.MutationID)
		}
		seen[e.Origin.MutationID] = true
		n := int64(-1)
		if e.Op == events.OpUpsert {
			var m map[string]int64
			if err := msgpack.Unmarshal(e.Body, &m); err != nil {
				t.Fatal(err)
			}
			n = m["n"]
		}
		if n >= 0 && n <= last[e.RecordID] && last[e.RecordID] != 0 {
			t.Fatalf("record %s: write %d applied after %d", e.RecordID, n, last[e.RecordID])
		}
		if n >= 0 {
			last[e.RecordID] = n
		}
	}
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	requireSameState(t, db, freshView(t, b, "north"))
}

func TestSyncer_Sync_UploadsBeforeDownload(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "server1", map[string]any{"x": 1}))
	startIngest(t, b, ingest.Rights{})
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", "north"), deviceClient(t, b, testConfig("tab1", "north")), db, nil)
	for i := 0; i < 5; i++ {
		mustWrite(t, s, "north", "action", fmt.Sprintf("a%d", i), map[string]any{"i": i})
	}
	var ops []string
	s.onTrace = func(op string) { ops = append(ops, op) }
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	uploads, firstFetch := 0, -1
	for i, op := range ops {
		switch op[:5] {
		case "uploa":
			uploads++
			if firstFetch >= 0 {
				t.Fatalf("upload at step %d after the first download fetch at step %d: %v", i, firstFetch, ops)
			}
		case "fetch":
			if firstFetch < 0 {
				firstFetch = i
			}
		}
	}
	if uploads != 5 || firstFetch < 0 {
		t.Fatalf("trace %v: want 5 uploads then fetches", ops)
	}
}

func TestSyncer_Write_LiveViewShowsPendingOnTop(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	v := b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"by": "server"}))
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", "north"), deviceClient(t, b, testConfig("tab1", "north")), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	m := mustWrite(t, s, "north", "event", "e1", map[string]any{"by": "device"})
	if m.BaseVersion != v {
		t.Fatalf("write based on %d, want the record's version %d", m.BaseVersion, v)
	}
	// A server change arrives underneath while the write is pending (no ingest runs).
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"by": "server2"}))
	if _, err := s.Sync(ctx, ScopeEvents); err != nil {
		t.Fatal(err)
	}
	recs, err := db.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || !recs[0].Pending || recs[0].Body["by"] != "device" {
		t.Fatalf("live view %+v: want the pending device change on top", recs)
	}
	mustWrite(t, s, "north", "event", "e1", nil)
	if n, _ := db.Count(ctx, store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit}); n != 0 {
		t.Fatalf("pending delete should hide the record, count %d", n)
	}
}

// TestSyncer_Write_BadWriteWrapsCause: a refused write matches ErrBadWrite
// and, through the same error, the cause from the wire contract.
func TestSyncer_Write_BadWriteWrapsCause(t *testing.T) {
	cfg := testConfig("tab1", "north")
	cfg.Kinds = events.DefaultKindSet()          // an agent set to the catalogue's kinds
	s := NewSyncer(cfg, nil, mustOpenDB(t), nil) // offline
	deep := map[string]any{}
	for i := 1; i <= events.MaxBodyDepth; i++ {
		deep = map[string]any{"n": deep}
	}
	cases := []struct {
		name string
		r    WriteRequest
		want error
	}{
		{"dotted id", WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "a.b", Body: map[string]any{"a": 1}},
			events.ErrInvalidField},
		{"kind outside the kinds setting", WriteRequest{OrgUnit: "north", Channel: "events", Kind: "document", RecordID: "r1",
			Body: map[string]any{"a": 1}}, events.ErrUnknownKind},
		{"body too large", WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1",
			Body: map[string]any{"blob": make([]byte, events.MaxBodySize)}}, events.ErrTooLarge},
		{"body too deep", WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1", Body: deep},
			events.ErrInvalidBody},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Write(context.Background(), tc.r)
			if !errors.Is(err, ErrBadWrite) {
				t.Fatalf("Write: %v, want ErrBadWrite", err)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Write: %v does not match its cause %v", err, tc.want)
			}
		})
	}
	if c, _ := s.db.OutboxCounts(context.Background()); c[store.StateQueued] != 0 {
		t.Fatalf("refused writes queued: %v", c)
	}
}
