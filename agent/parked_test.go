package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/projections/projectionstest"
	"github.com/fieldsync/fieldsync/store"
)

// streamLog publishes raw changes and keeps them, with their stream
// sequences, to compute the reference projection from.
type streamLog struct {
	b    *fstest.Broker
	msgs []projections.Message
}

// put publishes a change of (unit, ch, kind, id) written with schema v (nil
// body: a delete), or data verbatim when data is set.
func (l *streamLog) put(tb testing.TB, unit string, ch events.Channel, kind, id string, v int, body map[string]any, data ...byte) {
	tb.Helper()
	a := events.Address{OrgUnit: unit, Channel: ch, Kind: kind, RecordID: id}
	subject, err := a.Subject()
	if err != nil {
		tb.Fatal(err)
	}
	if data == nil {
		data = fstest.EnvelopeBytes(tb, fstest.Change(tb, unit, ch, kind, id, body), v)
	}
	seq, err := l.b.Client.Publisher().PublishRaw(context.Background(), subject, data)
	if err != nil {
		tb.Fatal(err)
	}
	l.msgs = append(l.msgs, projections.Message{Subject: subject, Seq: seq, Data: data})
}

// reference folds every logged message with r, stream by stream.
func (l *streamLog) reference(r projections.Reader) *projectionstest.State {
	by := map[projections.Stream][]projections.Message{}
	for _, m := range l.msgs {
		a, _ := events.ParseSubject(m.Subject)
		st := projections.Stream{Unit: a.OrgUnit, Channel: a.Channel}
		by[st] = append(by[st], m)
	}
	s := projectionstest.NewState()
	for st, ms := range by {
		s.Apply(st, r.Fold(ms))
	}
	return s
}

// requireReference fails unless db's records and parked changes are those
// of ref.
func requireReference(tb testing.TB, db *store.DB, ref *projectionstest.State, what string) {
	tb.Helper()
	m := serverModel{}
	for a, r := range ref.Records {
		m[a] = modelRecord{version: r.Version, body: r.Body}
	}
	requireSameState(tb, db, m)
	parked, err := db.Parked(context.Background(), 10000)
	if err != nil {
		tb.Fatal(err)
	}
	var got, want []string
	for _, p := range parked {
		got = append(got, fmt.Sprintf("%d %s %s", p.Seq, p.Subject, p.Reason))
	}
	for _, ps := range ref.Parked {
		for _, p := range ps {
			want = append(want, fmt.Sprintf("%d %s %s", p.Seq, p.Subject, p.Code))
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		tb.Fatalf("%s: parked %v, want %v", what, got, want)
	}
}

// An old build (fixed kind list) syncs a stream with kinds it does not
// know and changes of newer schemas: it parks them, its checkpoints move
// past them and nothing is a bad message. A build taking every kind,
// opened on the same store, applies the parked kinds at start; one reading
// schema 2 applies those changes before its first sync. Each time the
// device equals the reference projection of that build.
func TestSyncer_Sync_ParksForANewerBuild(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	l := &streamLog{b: b}
	ev, adm := events.ChannelEvents, events.ChannelAdmin
	for i := 0; i < 5; i++ { // loaded by the first sync's snapshot
		l.put(t, "north", ev, "event", fmt.Sprintf("e%d", i), 1, map[string]any{"i": i})
	}
	l.put(t, "north", adm, "setting", "lang", 1, map[string]any{"v": "en"})

	dir := t.TempDir()
	old := testConfig("tab1", "north")
	old.DataDir, old.Kinds = dir, events.DefaultKindSet()
	db, err := store.Open(ctx, old.DBPath(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSyncer(old, deviceClient(t, b, old), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	// Deltas: new kinds and newer schemas, interleaved with known changes
	// of the same records.
	l.put(t, "north", ev, "event", "e0", 2, map[string]any{"rev": 2})    // parked, then
	l.put(t, "north", ev, "event", "e0", 1, nil)                         // deleted by a change the old build reads
	l.put(t, "north", ev, "event", "e1", 2, map[string]any{"rev": 2})    // parked: e1's latest
	l.put(t, "north", ev, "inspection", "i1", 1, map[string]any{"n": 1}) // a new kind
	l.put(t, "north", ev, "inspection", "i1", 1, map[string]any{"n": 2})
	l.put(t, "north", ev, "inspection", "i2", 1, map[string]any{"n": 1})
	l.put(t, "north", ev, "inspection", "i2", 1, nil)
	l.put(t, "north", ev, "inspection", "i3", 2, map[string]any{"n": 1}) // new kind and schema 2
	l.put(t, "north", ev, "event", "e2", 3, map[string]any{"rev": 3})    // schema 3: newer than every build here
	l.put(t, "north", ev, "inspection", "bad", 1, nil, 0xc1)             // corrupt: bad for every build
	l.put(t, "north", adm, "site_map", "m1", 1, map[string]any{"rev": 1})
	l.put(t, "", adm, "holiday_calendar", "y2025", 1, map[string]any{"days": 12})
	rep, err := s.Sync(ctx, ScopeFull)
	if err != nil {
		t.Fatal(err)
	}
	oldBuild := old.Reader()
	requireReference(t, db, l.reference(oldBuild), "old build")
	if rep.Parked != 10 || rep.Rejected != 1 {
		t.Fatalf("old build parked %d and rejected %d, want 10 and 1", rep.Parked, rep.Rejected)
	}
	if n, _ := db.CountSyncErrors(ctx); n != 1 {
		t.Fatalf("%d bad messages, want only the corrupt one", n)
	}
	for _, st := range []struct {
		unit string
		ch   events.Channel
	}{{"north", ev}, {"north", adm}, {"", adm}} {
		cp, _ := db.Checkpoint(ctx, st.unit, st.ch)
		if want := lastSeq(l.msgs, st.unit, st.ch); cp.LastSeq != want {
			t.Fatalf("checkpoint %s/%s at %d, want past every message (%d)", st.unit, st.ch, cp.LastSeq, want)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// A build taking every kind starts on the same store.
	every := testConfig("tab1", "north")
	every.DataDir, every.BrokerURL, every.APIAddr = dir, b.URL(), "127.0.0.1:0"
	every.Credentials = b.DeviceCreds(t, every.DeviceID, every.OrgUnits...)
	a, err := Open(ctx, every, nil)
	if err != nil {
		t.Fatal(err)
	}
	afterStart := l.reference(oldBuild)
	afterStart.Unpark(every.Reader())
	requireReference(t, a.DB(), afterStart, "after the start of a build taking every kind")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// A build reading schema 2 (above this build's: the field set is the
	// same) applies the rest before its first sync.
	newer := testConfig("tab1", "north")
	newer.DataDir, newer.MaxSchemaVersion = dir, 2
	db, err = store.Open(ctx, newer.DBPath(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s = NewSyncer(newer, deviceClient(t, b, newer), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	final := l.reference(newer.Reader())
	requireReference(t, db, final, "newer build")
	if n, _ := db.CountParked(ctx); n != 1 {
		t.Fatalf("%d parked after the newer build, want only the schema-3 change", n)
	}
	if n, _ := db.CountSyncErrors(ctx); n != 1 {
		t.Fatalf("%d bad messages after the newer build, want 1", n)
	}
}

func lastSeq(msgs []projections.Message, unit string, ch events.Channel) uint64 {
	var last uint64
	for _, m := range msgs {
		if a, err := events.ParseSubject(m.Subject); err == nil && a.OrgUnit == unit && a.Channel == ch {
			last = max(last, m.Seq)
		}
	}
	return last
}

// A change of a kind outside the compliance app's catalogue, or of a newer
// schema, is not a bad message: the kind syncs (kinds are open), the newer
// schema is kept. (Before: both were recorded as bad messages and skipped
// for good.)
func TestSyncer_Sync_NewKindsAndSchemasAreNotBadMessages(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	model := serverModel{}
	model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", "north"), deviceClient(t, b, testConfig("tab1", "north")), db, nil)
	if _, err := s.Sync(ctx, ScopeEvents); err != nil {
		t.Fatal(err)
	}
	e := fstest.Change(t, "north", events.ChannelEvents, "inspection", "i1", map[string]any{"x": 2})
	data := fstest.EnvelopeBytes(t, e, events.SchemaVersion)
	if _, err := b.Client.Publisher().PublishRaw(ctx, "fs.org.north.events.inspection.i1", data); err != nil {
		t.Fatal(err)
	}
	future := fstest.EnvelopeBytes(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 3}), events.SchemaVersion+1)
	if _, err := b.Client.Publisher().PublishRaw(ctx, "fs.org.north.events.event.e1", future); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sync(ctx, ScopeEvents); err != nil {
		t.Fatal(err)
	}
	if errs, _ := db.SyncErrors(ctx, 10); len(errs) != 0 {
		t.Fatalf("recorded as bad messages: %+v", errs)
	}
	recs, err := db.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", Kind: "inspection"})
	if err != nil || len(recs) != 1 || !bytes.Equal(recs[0].RawBody, e.Body) {
		t.Fatalf("a record of a new kind must sync: %+v, %v", recs, err)
	}
}

// A server writing a newer envelope schema than the agent reads, with the
// same protocol version: the agent stops as incompatible_server, applies
// and uploads nothing (before: it synced and skipped what it could not
// read).
func TestAgent_Status_IncompatibleServer_NewerSchema(t *testing.T) {
	newer := events.LocalHello("broker")
	newer.SchemaVersion = events.SchemaVersion + 1 // same protocol
	st := incompatibleStatus(t, newer)
	if !strings.Contains(st.LastError, "schema") || !strings.Contains(st.LastError, "upgrade the device agent") {
		t.Fatalf("incompatible status should say the schema is newer and which side to upgrade: %q", st.LastError)
	}
}

// Local writes follow the kinds setting: any kind by default, only the
// listed ones of a restricted channel.
func TestSyncer_Write_Kinds(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	cfg := testConfig("tab1", "north")
	s := NewSyncer(cfg, deviceClient(t, b, cfg), mustOpenDB(t), nil)
	w := WriteRequest{OrgUnit: "north", Channel: "events", Kind: "inspection", RecordID: "i1", Body: map[string]any{"a": 1}}
	if _, err := s.Write(ctx, w); err != nil {
		t.Fatalf("a kind outside the catalogue: %v", err)
	}
	cfg.Kinds = events.KindSet{events.ChannelEvents: {"event"}}
	s = NewSyncer(cfg, deviceClient(t, b, cfg), mustOpenDB(t), nil)
	if _, err := s.Write(ctx, w); !errors.Is(err, ErrBadWrite) || !errors.Is(err, events.ErrUnknownKind) {
		t.Fatalf("a kind the setting leaves out: %v, want ErrBadWrite", err)
	}
	w.Kind = "event"
	if _, err := s.Write(ctx, w); err != nil {
		t.Fatalf("a listed kind: %v", err)
	}
}
