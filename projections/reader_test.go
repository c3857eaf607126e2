package projections_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
)

// oldBuild and newBuild are the two readers of testdata/upgrade.jsonl: a
// build with the fixed kind list of before and this build's schema, and
// one that reads every kind and schema 2.
var (
	oldBuild = projections.Reader{Kinds: events.DefaultKindSet()}
	newBuild = projections.Reader{MaxSchemaVersion: 2}
)

func TestReader_Fold(t *testing.T) {
	known := env(t, nil)
	newKind := env(t, map[string]any{"kind": "inspection"})
	v2 := env(t, map[string]any{"v": int64(2)})
	msgs := []projections.Message{
		{Subject: okSubject, Seq: 1, Data: known},
		{Subject: "fs.org.north.events.inspection.e1", Seq: 2, Data: newKind},
		{Subject: okSubject, Seq: 3, Data: v2},
		{Subject: "fs.org.north.events.inspection.e2", Seq: 4, Data: []byte{0xc1}}, // corrupt: bad whatever the kind
		{Subject: "fs.org.north.events.inspection.e2", Seq: 5, Data: newKind},      // another record's envelope
		{Subject: "fs.org.north.events.insp*ection.e1", Seq: 6, Data: newKind},     // bad subject token
		{Subject: "fs.org.north.events.event.e1", Seq: 7, Data: env(t, nil, "ts")}, // missing field
	}
	for _, tc := range []struct {
		name       string
		r          projections.Reader
		changes    []uint64
		parked     map[uint64]string
		rejectSeqs []uint64
	}{
		{"this build", projections.Reader{}, []uint64{1, 2}, map[uint64]string{3: "unknown_version"}, []uint64{4, 5, 6, 7}},
		{"fixed kinds", oldBuild, []uint64{1}, map[uint64]string{2: "unknown_kind", 3: "unknown_version"}, []uint64{4, 5, 6, 7}},
		{"schema 2", newBuild, []uint64{1, 2, 3}, map[uint64]string{}, []uint64{4, 5, 6, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.r.Fold(msgs)
			var got []uint64
			for _, c := range b.Changes {
				got = append(got, c.Seq)
			}
			if !equalSeqs(got, tc.changes) {
				t.Errorf("changes %v, want %v", got, tc.changes)
			}
			if len(b.Parked) != len(tc.parked) {
				t.Errorf("parked %+v, want %v", b.Parked, tc.parked)
			}
			for _, p := range b.Parked {
				m := msgs[p.Seq-1]
				if tc.parked[p.Seq] != p.Code || p.Subject != m.Subject || !bytes.Equal(p.Data, m.Data) || tc.r.MayRead(p) {
					t.Errorf("parked %+v, want code %q, the message as read, and that its reader may not read it", p, tc.parked[p.Seq])
				}
				if p.Addr.Kind == "" || p.Addr.RecordID == "" {
					t.Errorf("parked %d without its record address: %+v", p.Seq, p.Addr)
				}
			}
			got = got[:0]
			for _, r := range b.Rejects {
				got = append(got, r.Seq)
				if projections.Parkable(r.Err) {
					t.Errorf("reject %d is parkable: %v", r.Seq, r.Err)
				}
			}
			if !equalSeqs(got, tc.rejectSeqs) || b.LastSeq != 7 {
				t.Errorf("rejects %v, LastSeq %d; want %v, 7", got, b.LastSeq, tc.rejectSeqs)
			}
		})
	}
	// The parked bytes are a copy: a consumer reuses its buffers.
	data := bytes.Clone(v2)
	b := projections.Fold([]projections.Message{{Subject: okSubject, Seq: 1, Data: data}})
	clear(data)
	if len(b.Parked) != 1 || !bytes.Equal(b.Parked[0].Data, v2) || b.Parked[0].Version != 2 {
		t.Fatalf("parked message changed with the consumer's buffer: %+v", b.Parked)
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReader_MayRead(t *testing.T) {
	p := projections.Parked{Addr: addr("north", events.ChannelEvents, "inspection", "i1"), Version: 1}
	if oldBuild.MayRead(p) || !newBuild.MayRead(p) {
		t.Fatalf("kind: old %v new %v", oldBuild.MayRead(p), newBuild.MayRead(p))
	}
	p = projections.Parked{Addr: addr("north", events.ChannelEvents, "event", "e1"), Version: 3}
	if newBuild.MayRead(p) || !(projections.Reader{MaxSchemaVersion: 3}).MayRead(p) {
		t.Fatal("version")
	}
	if err := (projections.Reader{MaxSchemaVersion: -1}).Validate(); !errors.Is(err, events.ErrInvalidField) {
		t.Fatalf("negative schema version: %v", err)
	}
}

// An old build folds testdata/upgrade.jsonl and parks what it cannot read;
// a newer build then unparks: the state must equal the newer build's fold
// of the same stream, whatever the batch size. Both states are golden.
func TestState_Unpark_Golden(t *testing.T) {
	msgs := loadMessages(t, "upgrade.jsonl")
	direct, directRejects := runWith(t, newBuild, msgs, 0)
	for _, n := range []int{0, 1, 4} {
		old, oldRejects := runWith(t, oldBuild, msgs, n)
		if n == 0 {
			checkGolden(t, "upgrade.old.golden.json", render(t, old, oldRejects))
		}
		if got := old.Unpark(oldBuild); got != 0 {
			t.Fatalf("unparking with the reader that parked applied %d", got)
		}
		if again, _ := runWith(t, oldBuild, msgs, n); renderState(t, old) != renderState(t, again) {
			t.Fatalf("unparking with the reader that parked changed the state:\n%s", lineDiff(renderState(t, again), renderState(t, old)))
		}
		applied := old.Unpark(newBuild)
		if applied == 0 {
			t.Fatal("the newer build applied nothing")
		}
		if got, want := renderState(t, old), renderState(t, direct); got != want {
			t.Fatalf("batches of %d: old build + unpark differs from the newer build's fold:\n%s", n, lineDiff(want, got))
		}
		if again := old.Unpark(newBuild); again != 0 {
			t.Fatalf("second unpark applied %d", again)
		}
	}
	checkGolden(t, "upgrade.new.golden.json", render(t, direct, directRejects))
	// What the golden files must show, whatever they say.
	checkRecord(t, direct, addr("north", events.ChannelEvents, "event", "r2"), 0)       // deleted after a parked upsert
	checkRecord(t, direct, addr("north", events.ChannelEvents, "inspection", "i1"), 12) // new kind, latest of four
	checkRecord(t, direct, addr("", events.ChannelAdmin, "holiday_calendar", "y2025"), 0)
	if ps := direct.Parked[projections.Stream{Unit: "north", Channel: events.ChannelEvents}]; len(ps) != 1 || ps[0].Version != 3 {
		t.Fatalf("the newer build must keep only the schema-3 change parked: %+v", ps)
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./projections -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("differs from %s (go test ./projections -update rewrites it):\n%s", path, lineDiff(string(want), string(got)))
	}
}
