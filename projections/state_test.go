package projections_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/projections/projectionstest"
)

const (
	goldenInput  = "two_units.jsonl"
	goldenOutput = "two_units.golden.json"
)

// wantRejects lists every message of two_units.jsonl that must be rejected,
// with its code.
var wantRejects = map[uint64]string{
	8:  "malformed",        // corrupt bytes (map16 header claiming 44478 keys)
	16: "bad_subject",      // unit token "no*rth"
	21: "subject_mismatch", // subject says unit north, envelope says south
	22: "subject_mismatch", // subject says kind event, envelope says widget
	28: "invalid_field",    // envelope record id "e4.x"
	33: "malformed",        // truncated envelope, last message of the tenant stream
}

// wantParked lists the messages of two_units.jsonl this build parks.
var wantParked = map[uint64]string{
	15: "unknown_version", // "v": 2
}

func TestState_Apply_Golden(t *testing.T) {
	msgs := loadMessages(t, goldenInput)
	s, rejects := run(t, msgs, 7)

	// Invariants that hold whatever the golden file says.
	g, keys := groupByStream(msgs)
	for _, st := range keys {
		var max uint64
		nrej := 0
		for _, m := range g[st] {
			max = m.Seq
			if _, bad := wantRejects[m.Seq]; bad {
				nrej++
			}
		}
		if got := s.Checkpoints[st]; got != max {
			t.Errorf("checkpoint of %v = %d, want its highest seq %d", st, got, max)
		}
		if got := s.Rejected[st]; got != nrej {
			t.Errorf("rejected count of %v = %d, want %d", st, got, nrej)
		}
	}
	if len(s.Checkpoints) != len(keys) {
		t.Errorf("%d checkpoints for %d streams: %v", len(s.Checkpoints), len(keys), s.Checkpoints)
	}
	if len(rejects) != len(wantRejects) {
		t.Errorf("%d rejects, want %d", len(rejects), len(wantRejects))
	}
	nparked := 0
	for _, ps := range s.Parked {
		for _, p := range ps {
			nparked++
			if want, ok := wantParked[p.Seq]; !ok || p.Code != want {
				t.Errorf("seq %d (%s) parked with %q (%v), want %q", p.Seq, p.Subject, p.Code, p.Err, want)
			}
		}
	}
	if nparked != len(wantParked) {
		t.Errorf("%d parked, want %d", nparked, len(wantParked))
	}
	for _, r := range rejects {
		if want, ok := wantRejects[r.Seq]; !ok || r.Code != want {
			t.Errorf("seq %d (%s) rejected with %q (%v), want %q", r.Seq, r.Subject, r.Code, r.Err, want)
		}
	}
	checkRecord(t, s, addr("", events.ChannelAdmin, "role_permission", "inspector-read"), 0) // deleted
	checkRecord(t, s, addr("", events.ChannelAdmin, "setting", "retention"), 25)             // latest of two
	checkRecord(t, s, addr("north", events.ChannelEvents, "event", "e1"), 10)                // latest of three
	checkRecord(t, s, addr("north", events.ChannelEvents, "action", "a1"), 30)               // delete, re-create across batches
	checkRecord(t, s, addr("south", events.ChannelEvents, "finding", "f1"), 20)              // delete, re-create in one batch
	checkRecord(t, s, addr("south", events.ChannelEvents, "event", "e1"), 32)                // same id as north's e1
	checkRecord(t, s, addr("south", events.ChannelEvents, "finding", "f9"), 0)               // mismatch never lands
	checkRecord(t, s, addr("north", events.ChannelEvents, "finding", "f9"), 0)
	checkRecord(t, s, addr("north", events.ChannelEvents, "event", "e3"), 0)   // newer version, parked
	checkRecord(t, s, addr("south", events.ChannelEvents, "widget", "w1"), 23) // a kind outside the catalogue

	got := render(t, s, rejects)
	path := filepath.Join("testdata", goldenOutput)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./projections -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("state differs from %s (go test ./projections -update rewrites it):\n%s", path, lineDiff(string(want), string(got)))
	}
}

func addr(unit string, ch events.Channel, kind, id string) events.Address {
	return events.Address{OrgUnit: unit, Channel: ch, Kind: kind, RecordID: id}
}

// checkRecord asserts that a is present at version, or absent when version is 0.
func checkRecord(t *testing.T, s *projectionstest.State, a events.Address, version uint64) {
	t.Helper()
	r, ok := s.Records[a]
	switch {
	case version == 0 && ok:
		t.Errorf("record %+v present at version %d, want absent", a, r.Version)
	case version != 0 && !ok:
		t.Errorf("record %+v absent, want version %d", a, version)
	case version != 0 && r.Version != version:
		t.Errorf("record %+v at version %d, want %d", a, r.Version, version)
	case ok && r.Addr != a:
		t.Errorf("record stored under %+v has address %+v", a, r.Addr)
	}
}

// lineDiff lists the lines that differ between want and got.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl + "\n")
		}
	}
	return b.String()
}

func TestState_Apply_Idempotent(t *testing.T) {
	msgs := loadMessages(t, goldenInput)
	want, _ := run(t, msgs, 7)
	wantText := renderState(t, want)
	g, keys := groupByStream(msgs)

	t.Run("whole stream twice", func(t *testing.T) {
		s := projectionstest.NewState()
		for _, st := range keys {
			b := projections.Fold(g[st])
			s.Apply(st, b)
			before := renderState(t, s)
			rej := s.Rejected[st]
			s.Apply(st, b)
			if after := renderState(t, s); after != before {
				t.Errorf("%v: second apply changed the state:\n%s", st, lineDiff(before, after))
			}
			if s.Rejected[st] != rej {
				t.Errorf("%v: second apply moved rejected count %d -> %d", st, rej, s.Rejected[st])
			}
		}
		if got := renderState(t, s); got != wantText {
			t.Errorf("state differs from batches of 7:\n%s", lineDiff(wantText, got))
		}
	})

	t.Run("each batch twice", func(t *testing.T) {
		s := projectionstest.NewState()
		for _, st := range keys {
			for _, part := range chunk(g[st], 7) {
				b := projections.Fold(part)
				s.Apply(st, b)
				s.Apply(st, projections.Fold(part)) // a fresh fold of a redelivery
				s.Apply(st, b)
			}
		}
		if got := renderState(t, s); got != wantText {
			t.Errorf("state differs from applying each batch once:\n%s", lineDiff(wantText, got))
		}
	})

	t.Run("earlier batches replayed after later ones", func(t *testing.T) {
		s := projectionstest.NewState()
		var folded []struct {
			st projections.Stream
			b  projections.Batch
		}
		for _, st := range keys {
			for _, part := range chunk(g[st], 3) {
				b := projections.Fold(part)
				s.Apply(st, b)
				folded = append(folded, struct {
					st projections.Stream
					b  projections.Batch
				}{st, b})
			}
		}
		before := renderState(t, s)
		if before != wantText {
			t.Fatalf("batches of 3 differ from batches of 7:\n%s", lineDiff(wantText, before))
		}
		// Replaying any earlier batch (a consumer reset or a late
		// redelivery) must not rewind records, resurrect deleted ones or
		// count rejects again, not even for a moment.
		for i, f := range folded {
			s.Apply(f.st, f.b)
			if got := renderState(t, s); got != before {
				t.Fatalf("replaying batch %d of %v (seqs up to %d) changed the state:\n%s", i, f.st, f.b.LastSeq, lineDiff(before, got))
			}
		}
	})
}

func TestState_Apply_BatchBoundaries(t *testing.T) {
	msgs := loadMessages(t, goldenInput)
	all, allRejects := run(t, msgs, 0)
	want := string(render(t, all, allRejects))
	if len(all.Records) == 0 || len(allRejects) == 0 {
		t.Fatalf("degenerate input: %d records, %d rejects", len(all.Records), len(allRejects))
	}
	for _, n := range []int{1, 2, 3, 7, 8} {
		s, rejects := run(t, msgs, n)
		if got := string(render(t, s, rejects)); got != want {
			t.Errorf("batches of %d differ from one batch:\n%s", n, lineDiff(want, got))
		}
	}

	// Streams are independent: interleaving their batches round-robin gives
	// the same state as applying stream after stream.
	g, keys := groupByStream(msgs)
	s := projectionstest.NewState()
	parts := map[projections.Stream][][]projections.Message{}
	for _, st := range keys {
		parts[st] = chunk(g[st], 2)
	}
	for more := true; more; {
		more = false
		for _, st := range keys {
			if len(parts[st]) == 0 {
				continue
			}
			s.Apply(st, projections.Fold(parts[st][0]))
			parts[st] = parts[st][1:]
			more = true
		}
	}
	if got := renderState(t, s); got != renderState(t, all) {
		t.Errorf("round-robin batches of 2 differ from one batch:\n%s", lineDiff(renderState(t, all), got))
	}
}

// A redelivered batch that overlaps the checkpoint applies only its new part.
func TestState_Apply_OverlappingBatch(t *testing.T) {
	msgs := loadMessages(t, goldenInput)
	g, _ := groupByStream(msgs)
	st := projections.Stream{Unit: "north", Channel: events.ChannelEvents}
	ms := g[st]
	if len(ms) < 8 {
		t.Fatalf("north/events has %d messages, want at least 8", len(ms))
	}
	want := projectionstest.NewState()
	want.Apply(st, projections.Fold(ms))

	s := projectionstest.NewState()
	s.Apply(st, projections.Fold(ms[:6]))
	s.Apply(st, projections.Fold(ms[3:])) // messages 3..5 again
	if got, w := renderState(t, s), renderState(t, want); got != w {
		t.Errorf("overlapping batches differ from one batch:\n%s", lineDiff(w, got))
	}
}

// Within one batch, a change older than the record's current version is
// ignored, upsert or delete.
func TestState_Apply_StaleChange(t *testing.T) {
	msgs := loadMessages(t, goldenInput)
	bySeq := map[uint64]projections.Message{}
	for _, m := range msgs {
		bySeq[m.Seq] = m
	}
	st := projections.Stream{Unit: "north", Channel: events.ChannelEvents}
	s := projectionstest.NewState()
	// e1@10 then its older versions @4 and @1; a1@30 then its older delete @11.
	s.Apply(st, projections.Fold([]projections.Message{bySeq[10], bySeq[4], bySeq[1], bySeq[30], bySeq[11]}))
	checkRecord(t, s, addr("north", events.ChannelEvents, "event", "e1"), 10)
	checkRecord(t, s, addr("north", events.ChannelEvents, "action", "a1"), 30)
	if r := s.Records[addr("north", events.ChannelEvents, "event", "e1")]; r.EventID != "ev-010" {
		t.Errorf("e1 holds event %q, want ev-010", r.EventID)
	}
	if got := s.Checkpoints[st]; got != 30 {
		t.Errorf("checkpoint %d, want 30", got)
	}
}
