package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

func TestSyncer_Sync_SnapshotTransfersEachRecordOnce(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	model := serverModel{}
	const records, versions = 200, 12 // more versions than the stream keeps (16 is the default)
	for v := 1; v <= versions; v++ {
		for i := 0; i < records; i++ {
			body := map[string]any{"v": v}
			if v == versions && i%10 == 0 {
				body = nil // the latest version of every tenth record is a delete
			}
			model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%d", i), body))
		}
	}
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", "north"), deviceClient(t, b, testConfig("tab1", "north")), db, nil)
	rep, err := s.Sync(ctx, ScopeEvents)
	if err != nil {
		t.Fatal(err)
	}
	requireSameState(t, db, model)
	if len(rep.Channels) != 1 || rep.Channels[0].Received != records {
		t.Fatalf("initial sync over %d records × %d versions transferred %+v, want exactly %d messages", records, versions, rep.Channels, records)
	}
}

func TestSyncer_Sync_RecreatesDeletedDurable(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	model := serverModel{}
	for i := 0; i < 50; i++ {
		model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%d", i), map[string]any{"i": i}))
	}
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", "north"), deviceClient(t, b, testConfig("tab1", "north")), db, nil)
	if _, err := s.Sync(ctx, ScopeEvents); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "action", fmt.Sprintf("a%d", i), map[string]any{"i": i}))
	}
	durable, _ := natsjs.DurableName("tab1", events.ChannelEvents)
	if err := b.Client.DeleteDurable(ctx, "north", durable); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Sync(ctx, ScopeEvents)
	if err != nil {
		t.Fatal(err)
	}
	requireSameState(t, db, model)
	if got := rep.Channels[0].Received; got != 20 {
		t.Fatalf("after the durable was deleted the device fetched %d messages, want only the 20 after its checkpoint", got)
	}
}

func TestSyncer_Sync_BadMessagesBecomeSyncErrors(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	model := serverModel{}
	pub := b.Client.Publisher()
	good := func(i int) {
		model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%d", i), map[string]any{"i": i}))
	}
	future := fstest.Change(t, "north", events.ChannelEvents, "event", "future", map[string]any{"x": 1})
	futureBytes := encodeWithVersion(t, future, events.SchemaVersion+1)
	mismatch, _ := events.Encode(fstest.Change(t, "north", events.ChannelEvents, "event", "other", map[string]any{"x": 1}))
	bad := []struct {
		subject, code string
		data          []byte
	}{
		{"fs.org.north.events.event.corrupt", "malformed", []byte{0xde, 0xad, 0xbe, 0xef}},
		{"fs.org.north.events.event.bad$id", "bad_subject", mismatch},
		{"fs.org.north.events.space*ship.x", "bad_subject", mismatch},
		{"fs.org.north.events.spaceship.x", "subject_mismatch", mismatch},
		{"fs.org.north.events.event.x.extra", "bad_subject", mismatch},
		{"fs.org.north.events.event.notother", "subject_mismatch", mismatch},
	}
	// A newer schema is not a bad message: it is parked (see parked_test.go).
	if _, err := pub.PublishRaw(ctx, "fs.org.north.events.event.future", futureBytes); err != nil {
		t.Fatal(err)
	}
	for i, m := range bad {
		good(i)
		if _, err := pub.PublishRaw(ctx, m.subject, m.data); err != nil {
			t.Fatal(err)
		}
	}
	good(100)
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", "north"), deviceClient(t, b, testConfig("tab1", "north")), db, nil)
	rep, err := s.Sync(ctx, ScopeEvents)
	if err != nil {
		t.Fatalf("bad messages must not fail the sync: %v", err)
	}
	requireSameState(t, db, model)
	if rep.Rejected != len(bad) || rep.Parked != 1 {
		t.Fatalf("rejected %d, parked %d; want %d and 1", rep.Rejected, rep.Parked, len(bad))
	}
	errs, err := db.SyncErrors(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range errs {
		got[e.Subject] = e.Code
		if e.Message == "" || e.Seq == 0 {
			t.Errorf("sync error without message or seq: %+v", e)
		}
	}
	for _, m := range bad {
		if got[m.subject] != m.code {
			t.Errorf("%s: recorded code %q, want %q", m.subject, got[m.subject], m.code)
		}
	}
	// A second sync neither re-records them nor fails.
	if _, err := s.Sync(ctx, ScopeEvents); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.CountSyncErrors(ctx); n != len(bad) {
		t.Fatalf("sync errors after a second sync: %d, want %d", n, len(bad))
	}
}

// encodeWithVersion encodes e as if written by another schema version.
func encodeWithVersion(tb testing.TB, e *events.Envelope, v int) []byte {
	tb.Helper()
	m := map[string]any{"id": e.EventID, "org": e.OrgUnit, "ch": string(e.Channel), "kind": e.Kind, "rid": e.RecordID,
		"op": string(e.Op), "v": v, "ts": e.Timestamp.UnixNano(), "body": e.Body}
	data := fstest.Body(tb, m)
	if _, err := projections.FromMessage(projections.Message{Subject: "fs.org.north.events.event." + e.RecordID, Data: data}); !errors.Is(err, events.ErrUnknownVersion) {
		tb.Fatalf("test envelope should have an unknown version, got %v", err)
	}
	return data
}

// Units and channels with no data (here the tenant stream and every
// documents channel) must not trip the bulk load of the others.
func TestSyncer_Sync_EmptyStreams(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north", "south")
	model := serverModel{}
	for i := 0; i < 30; i++ {
		model.publish(t, b, fstest.Change(t, "south", events.ChannelAdmin, "setting", fmt.Sprintf("s%d", i), map[string]any{"i": i}))
		model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%d", i), map[string]any{"i": i}))
	}
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", "north", "south"), deviceClient(t, b, testConfig("tab1", "north", "south")), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	requireSameState(t, db, model)
	model.publish(t, b, fstest.Change(t, "", events.ChannelAdmin, "setting", "late", map[string]any{"x": 1}))
	model.publish(t, b, fstest.Change(t, "south", events.ChannelAdmin, "setting", "s1", map[string]any{"x": 2}))
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	requireSameState(t, db, model)
}

func TestSyncer_Sync_IncompatibleServer(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	// Replace the broker's answer with one from a server that needs newer agents.
	future := events.LocalHello("broker")
	future.Protocol, future.MinPeerProtocol = events.ProtocolVersion+5, events.ProtocolVersion+1
	if err := b.Hello.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	nc := b.Client.Conn()
	sub, err := nc.Subscribe(events.HelloSubject, func(m *nats.Msg) {
		data, _ := json.Marshal(future)
		m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", "north"), deviceClient(t, b, testConfig("tab1", "north")), db, nil)
	mustWrite(t, s, "north", "event", "local", map[string]any{"y": 1})
	_, err = s.Sync(ctx, ScopeFull)
	if !errors.Is(err, events.ErrIncompatible) || !strings.Contains(err.Error(), "upgrade the device agent") {
		t.Fatalf("sync against a newer server: %v, want ErrIncompatible saying to upgrade the agent", err)
	}
	if cps, _ := db.Checkpoints(ctx); len(cps) != 0 {
		t.Fatalf("nothing may be applied, got checkpoints %+v", cps)
	}
	if c, _ := db.OutboxCounts(ctx); c[store.StateQueued] != 1 {
		t.Fatalf("nothing may be uploaded: %v", c)
	}
	if n := len(b.DeviceChanges(t, "north")); n != 0 {
		t.Fatalf("server received %d device changes", n)
	}
}
