package store_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/projections/projectionstest"
	"github.com/fieldsync/fieldsync/store"
)

// The two builds of these tests: one with the fixed kind list of before
// and this build's schema, one reading every kind and schema 2.
var (
	oldBuild = projections.Reader{Kinds: events.DefaultKindSet()}
	newBuild = projections.Reader{MaxSchemaVersion: 2}
)

// wire encodes a change of a as read from its stream at seq, written with
// schema version v (nil body: a delete).
func wire(tb testing.TB, seq uint64, a events.Address, v int, body map[string]any) projections.Message {
	tb.Helper()
	m := map[string]any{"id": fmt.Sprintf("ev-%d", seq), "ch": string(a.Channel), "kind": a.Kind, "rid": a.RecordID,
		"op": "delete", "v": v, "ts": time.UnixMilli(1_700_000_000_000 + int64(seq)).UnixNano()}
	if a.OrgUnit != "" {
		m["org"] = a.OrgUnit
	}
	if body != nil {
		m["op"], m["body"] = "upsert", msgpack.RawMessage(mustBody(tb, body))
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(m); err != nil {
		tb.Fatal(err)
	}
	subject, err := a.Subject()
	if err != nil {
		tb.Fatal(err)
	}
	return projections.Message{Subject: subject, Seq: seq, Data: buf.Bytes()}
}

// upgradeStream returns n random messages over a few records of three
// streams: known and new kinds, schemas 1 to 3, upserts and deletes, and
// some corrupt messages. Seqs increase through the whole slice.
func upgradeStream(tb testing.TB, seed uint64, n int) []projections.Message {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	type rec struct {
		unit string
		ch   events.Channel
		kind string
	}
	recs := []rec{
		{"north", events.ChannelEvents, "event"}, {"north", events.ChannelEvents, "inspection"},
		{"north", events.ChannelAdmin, "setting"}, {"north", events.ChannelAdmin, "site_map"},
		{"", events.ChannelAdmin, "holiday_calendar"}, {"", events.ChannelAdmin, "setting"},
	}
	var out []projections.Message
	for seq := uint64(1); len(out) < n; seq++ {
		r := recs[rng.IntN(len(recs))]
		a := events.Address{OrgUnit: r.unit, Channel: r.ch, Kind: r.kind, RecordID: fmt.Sprintf("r%d", rng.IntN(4))}
		v := 1
		switch x := rng.IntN(20); {
		case x < 4:
			v = 2
		case x == 4:
			v = 3
		}
		var body map[string]any
		if rng.IntN(4) > 0 {
			body = map[string]any{"seq": seq, "v": v}
		}
		m := wire(tb, seq, a, v, body)
		if rng.IntN(30) == 0 {
			m.Data = []byte{0xc1} // corrupt: a bad message for every build
		}
		out = append(out, m)
	}
	return out
}

func streamOf(m projections.Message) projections.Stream {
	a, _ := events.ParseSubject(m.Subject)
	return projections.Stream{Unit: a.OrgUnit, Channel: a.Channel}
}

// load folds msgs with r in batches of size per stream and applies them
// both to db (staged from the second batch of a stream on when stage is
// set) and to the reference state.
func load(tb testing.TB, db *store.DB, ref *projectionstest.State, r projections.Reader, msgs []projections.Message, size int, stage bool) {
	tb.Helper()
	by := map[projections.Stream][]projections.Message{}
	var order []projections.Stream
	for _, m := range msgs {
		st := streamOf(m)
		if _, ok := by[st]; !ok {
			order = append(order, st)
		}
		by[st] = append(by[st], m)
	}
	if stage {
		if _, _, err := db.BeginStaging(context.Background(), time.Hour, time.Now()); err != nil {
			tb.Fatal(err)
		}
	}
	for _, st := range order {
		ms := by[st]
		for i := 0; i < len(ms); i += size {
			b := r.Fold(ms[i:min(i+size, len(ms))])
			ref.Apply(st, b)
			cp := mustCheckpoint(tb, db, st.Unit, st.Channel)
			mustApply(tb, db, store.Batch{Unit: st.Unit, Channel: st.Channel, Batch: b, Stage: stage && cp.SnapshotDone, SnapshotDone: true})
		}
	}
}

// requireMatches fails unless db's live view and parked changes are those
// of ref.
func requireMatches(tb testing.TB, db *store.DB, ref *projectionstest.State, what string) {
	tb.Helper()
	for _, ch := range events.Channels {
		var want []snapshot
		for _, r := range ref.Sorted() {
			if r.Addr.Channel == ch {
				want = append(want, snapshot{r.Addr.OrgUnit, r.Addr.Kind, r.Addr.RecordID, r.Version, r.EventID, string(r.Body)})
			}
		}
		sort.Slice(want, func(i, j int) bool {
			return want[i].Unit+want[i].Kind+want[i].ID < want[j].Unit+want[j].Kind+want[j].ID
		})
		if got := allRecords(tb, db, ch); fmt.Sprint(got) != fmt.Sprint(want) {
			tb.Fatalf("%s: %s records differ from the reference:\n got  %v\n want %v", what, ch, got, want)
		}
	}
	parked, err := db.Parked(context.Background(), 100000)
	if err != nil {
		tb.Fatal(err)
	}
	var got, want []string
	for _, p := range parked {
		got = append(got, fmt.Sprintf("%s/%s@%d %s v%d %s", p.Unit, p.Channel, p.Seq, p.Subject, p.Version, p.Reason))
	}
	for st, ps := range ref.Parked {
		for _, p := range ps {
			want = append(want, fmt.Sprintf("%s/%s@%d %s v%d %s", st.Unit, st.Channel, p.Seq, p.Subject, p.Version, p.Code))
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		tb.Fatalf("%s: parked changes differ from the reference:\n got  %v\n want %v", what, got, want)
	}
	rejected := 0
	for _, n := range ref.Rejected {
		rejected += n
	}
	if n, err := db.CountSyncErrors(context.Background()); err != nil || n != rejected {
		tb.Fatalf("%s: %d sync errors (%v), reference rejected %d", what, n, err, rejected)
	}
}

// An old build parks what it cannot read (the checkpoint moves on); a
// newer build opened on the same store applies the parked changes in order
// and the device equals the reference projection of the newer build.
func TestDB_ApplyParked_Upgrade(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		size  int
		stage bool
	}{{"one batch", 1000, false}, {"batches of 3", 3, false}, {"staged batches of 5", 5, true}} {
		for seed := uint64(1); seed <= 4; seed++ {
			t.Run(fmt.Sprintf("%s/seed %d", tc.name, seed), func(t *testing.T) {
				msgs := upgradeStream(t, seed, 150)
				db := mustOpenDB(t)
				old := projectionstest.NewState()
				load(t, db, old, oldBuild, msgs, tc.size, tc.stage)
				if tc.stage {
					mustReadyAndApply(t, db)
				}
				requireMatches(t, db, old, "old build")
				if len(old.Parked) == 0 {
					t.Fatal("degenerate stream: nothing parked")
				}
				for st, last := range old.Checkpoints {
					if cp := mustCheckpoint(t, db, st.Unit, st.Channel); cp.LastSeq != last {
						t.Fatalf("checkpoint of %v at %d, want past every message (%d)", st, cp.LastSeq, last)
					}
				}
				// The same build again: nothing changes.
				if rep, err := db.ApplyParked(ctx, oldBuild); err != nil || rep.Applied != 0 || rep.Rejected != 0 {
					t.Fatalf("old build unparked %+v, %v", rep, err)
				}
				requireMatches(t, db, old, "old build again")

				rep, err := db.ApplyParked(ctx, newBuild)
				if err != nil {
					t.Fatal(err)
				}
				want := projectionstest.NewState()
				for st, ms := range groupBy(msgs) {
					want.Apply(st, newBuild.Fold(ms))
				}
				requireMatches(t, db, want, "newer build")
				if rep.Applied == 0 || rep.Left != countParked(want) {
					t.Fatalf("unpark report %+v, want applied > 0 and %d left", rep, countParked(want))
				}
				if again, err := db.ApplyParked(ctx, newBuild); err != nil || again.Applied != 0 || again.Rejected != 0 {
					t.Fatalf("second unpark %+v, %v", again, err)
				}
			})
		}
	}
}

func groupBy(msgs []projections.Message) map[projections.Stream][]projections.Message {
	out := map[projections.Stream][]projections.Message{}
	for _, m := range msgs {
		out[streamOf(m)] = append(out[streamOf(m)], m)
	}
	return out
}

func countParked(s *projectionstest.State) int {
	n := 0
	for _, ps := range s.Parked {
		n += len(ps)
	}
	return n
}

// mustReadyAndApply marks the staging ready and applies it, if there is anything.
func mustReadyAndApply(tb testing.TB, db *store.DB) {
	tb.Helper()
	ctx := context.Background()
	if _, err := db.MarkStagingReady(ctx, time.Now()); err != nil {
		tb.Fatal(err)
	}
	if _, err := db.ApplyStaged(ctx, time.Now()); err != nil && err != store.ErrNothingToApply {
		tb.Fatal(err)
	}
}

// A parked change newer than a staged, not yet applied change of the same
// record must win once the staged download is applied; a staged change
// newer than a parked one supersedes it.
func TestDB_ApplyParked_WithStagedDownload(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	a := events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "e1"}
	b := events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "e2"}
	st := projections.Stream{Unit: "north", Channel: ev}
	ref := projectionstest.NewState()
	apply := func(stage bool, msgs ...projections.Message) {
		f := oldBuild.Fold(msgs)
		ref.Apply(st, f)
		mustApply(t, db, store.Batch{Unit: "north", Channel: ev, Batch: f, Stage: stage, SnapshotDone: true})
	}
	apply(false, wire(t, 1, a, 1, map[string]any{"n": 1}), wire(t, 2, b, 1, map[string]any{"n": 2}))
	if _, _, err := db.BeginStaging(ctx, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	apply(true,
		wire(t, 3, a, 1, map[string]any{"n": 3}), // staged
		wire(t, 4, a, 2, map[string]any{"n": 4}), // parked, newer than the staged change
		wire(t, 5, b, 2, map[string]any{"n": 5}), // parked, then superseded by the staged delete
		wire(t, 6, b, 1, nil))
	if ps, _ := db.Parked(ctx, 10); len(ps) != 1 || ps[0].Seq != 4 || ps[0].Reason != "unknown_version" {
		t.Fatalf("parked %+v, want only seq 4 (seq 5 is superseded by the staged delete)", ps)
	}
	if rep, err := db.ApplyParked(ctx, newBuild); err != nil || rep.Applied != 1 || rep.Left != 0 {
		t.Fatalf("unpark: %+v, %v", rep, err)
	}
	ref.Unpark(newBuild)
	if r, ok := recordByID(t, db, "north", ev, "e1"); !ok || r.Version != 4 {
		t.Fatalf("before Apply the view shows e1 %+v (%v), want the unparked version 4", r, ok)
	}
	mustReadyAndApply(t, db)
	requireMatches(t, db, ref, "after Apply")
	if _, err := db.MergeApplied(ctx, 100); err != nil {
		t.Fatal(err)
	}
	requireMatches(t, db, ref, "after the merge")
}

func TestDB_Apply_Parks(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	a := events.Address{OrgUnit: "north", Channel: ev, Kind: "inspection", RecordID: "i1"}
	msgs := []projections.Message{wire(t, 7, a, 1, map[string]any{"n": 1}), wire(t, 9, a, 2, map[string]any{"n": 2})}
	f := oldBuild.Fold(msgs)
	if len(f.Parked) != 2 {
		t.Fatalf("fold parked %d, want 2", len(f.Parked))
	}
	b := store.Batch{Unit: "north", Channel: ev, Batch: f}
	mustApply(t, db, b)
	mustApply(t, db, b) // a redelivery is parked once
	ps, err := db.Parked(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Seq != 7 || ps[0].Reason != "unknown_kind" || ps[1].Reason != "unknown_version" || ps[1].Version != 2 ||
		ps[0].Subject != msgs[0].Subject || ps[0].Kind != "inspection" || ps[0].RecordID != "i1" || ps[0].Message == "" {
		t.Fatalf("parked %+v", ps)
	}
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 9 || cp.Rejected != 0 {
		t.Fatalf("checkpoint %+v, want LastSeq 9 and no rejects", cp)
	}
	if n, _ := db.CountSyncErrors(ctx); n != 0 {
		t.Fatalf("%d sync errors: a parked change is not a bad message", n)
	}
	// A parked change read from another stream is a bad message.
	other := store.Batch{Unit: "south", Channel: ev, Batch: oldBuild.Fold([]projections.Message{wire(t, 3, a, 2, map[string]any{"n": 3})})}
	mustApply(t, db, other)
	if n, _ := db.CountParked(ctx); n != 2 {
		t.Fatalf("%d parked after a wrong-stream batch, want 2", n)
	}
	if errs, _ := db.SyncErrors(ctx, 10); len(errs) != 1 || errs[0].Code != "wrong_stream" {
		t.Fatalf("sync errors %+v, want one wrong_stream", errs)
	}
	// A newer change of the record this build reads supersedes both.
	mustApply(t, db, store.Batch{Unit: "north", Channel: ev, Batch: newBuild.Fold([]projections.Message{wire(t, 12, a, 1, nil)})})
	if n, _ := db.CountParked(ctx); n != 0 {
		t.Fatalf("%d parked after a newer delete of the record, want 0", n)
	}
	// Sync Now's wipe removes parked changes with the rest.
	mustApply(t, db, b)
	if _, err := db.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.CountParked(ctx); n != 0 {
		t.Fatalf("%d parked after a wipe", n)
	}
}

// A parked change the newer reader still cannot read stays parked with
// its reason brought up to date; it is neither applied nor a bad message.
func TestDB_ApplyParked_StillUnreadable(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	// An envelope claiming schema 1 first and 2 last: the version column
	// (the first) says readable, decoding (the last wins) says newer.
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	kv := []any{"v", 1, "id", "ev-1", "org", "north", "ch", "events", "kind", "inspection", "rid", "i1", "op", "delete", "ts", int64(1), "v", 2}
	if err := enc.EncodeMapLen(len(kv) / 2); err != nil {
		t.Fatal(err)
	}
	for _, x := range kv {
		if err := enc.Encode(x); err != nil {
			t.Fatal(err)
		}
	}
	m := projections.Message{Subject: "fs.org.north.events.inspection.i1", Seq: 4, Data: buf.Bytes()}
	f := oldBuild.Fold([]projections.Message{m})
	if len(f.Parked) != 1 || f.Parked[0].Version != 1 {
		t.Fatalf("fold: %+v", f)
	}
	mustApply(t, db, store.Batch{Unit: "north", Channel: ev, Batch: f})
	rep, err := db.ApplyParked(ctx, projections.Reader{}) // every kind, schema 1
	if err != nil || rep.Applied != 0 || rep.Rejected != 0 || rep.Left != 1 {
		t.Fatalf("unpark: %+v, %v", rep, err)
	}
	ps, _ := db.Parked(ctx, 10)
	if len(ps) != 1 || ps[0].Reason != "unknown_version" {
		t.Fatalf("parked %+v, want it kept as unknown_version", ps)
	}
	if n, _ := db.CountSyncErrors(ctx); n != 0 {
		t.Fatalf("%d sync errors", n)
	}
}
