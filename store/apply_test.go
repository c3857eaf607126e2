package store_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/projections/projectionstest"
	"github.com/fieldsync/fieldsync/store"
)

const ev = events.ChannelEvents

func TestDB_Apply_UpsertsThenDeletes(t *testing.T) {
	db := mustOpenDB(t)
	n := mustApply(t, db, batch("north", ev, []projections.Change{
		upsertAt(t, 1, "north", ev, "event", "e1", map[string]any{"title": "one"}),
		upsertAt(t, 2, "north", ev, "event", "e2", map[string]any{"title": "two"}),
		upsertAt(t, 3, "north", ev, "action", "a1", map[string]any{"title": "act"}),
	}))
	if n != 3 {
		t.Fatalf("applied %d, want 3", n)
	}
	if got := mustCount(t, db, store.Query{Channel: ev, Unit: "north"}); got != 3 {
		t.Fatalf("count after upserts = %d, want 3", got)
	}

	n = mustApply(t, db, batch("north", ev, []projections.Change{
		deleteAt(4, "north", ev, "event", "e1"),
		upsertAt(t, 5, "north", ev, "event", "e2", map[string]any{"title": "two v2"}),
	}))
	if n != 2 {
		t.Fatalf("applied %d, want 2", n)
	}
	if _, ok := recordByID(t, db, "north", ev, "e1"); ok {
		t.Fatal("e1 still present after its delete")
	}
	e2, ok := recordByID(t, db, "north", ev, "e2")
	if !ok {
		t.Fatal("e2 missing")
	}
	if e2.Version != 5 || e2.Body["title"] != "two v2" || e2.EventID != "ev-e2-5" {
		t.Fatalf("e2 not updated: version %d event %s body %v", e2.Version, e2.EventID, e2.Body)
	}
	if got := mustCount(t, db, store.Query{Channel: ev, Unit: "north"}); got != 2 {
		t.Fatalf("count after delete = %d, want 2", got)
	}
	cp := mustCheckpoint(t, db, "north", ev)
	if cp.LastSeq != 5 || cp.Applied != 5 || cp.Rejected != 0 {
		t.Fatalf("checkpoint %+v, want LastSeq 5 Applied 5 Rejected 0", cp)
	}
}

func TestDB_Apply_TenantAdmin(t *testing.T) {
	db := mustOpenDB(t)
	mustApply(t, db, batch("", events.ChannelAdmin, []projections.Change{
		upsertAt(t, 7, "", events.ChannelAdmin, "setting", "s1", map[string]any{"v": 1}),
	}))
	if got := mustCount(t, db, store.Query{Channel: events.ChannelAdmin, Unit: ""}); got != 1 {
		t.Fatalf("tenant admin count = %d, want 1", got)
	}
	if cp := mustCheckpoint(t, db, "", events.ChannelAdmin); cp.LastSeq != 7 {
		t.Fatalf("tenant checkpoint %+v, want LastSeq 7", cp)
	}
	// The tenant checkpoint is its own: an org unit's admin channel is untouched.
	if cp := mustCheckpoint(t, db, "north", events.ChannelAdmin); cp.LastSeq != 0 || cp.Applied != 0 {
		t.Fatalf("north admin checkpoint %+v, want zero", cp)
	}
}

func TestDB_Apply_SkipsBatchAtOrBelowCheckpoint(t *testing.T) {
	db := mustOpenDB(t)
	b := batch("north", ev, []projections.Change{
		upsertAt(t, 1, "north", ev, "event", "e1", map[string]any{"n": 1}),
		upsertAt(t, 2, "north", ev, "event", "e2", map[string]any{"n": 2}),
		deleteAt(3, "north", ev, "event", "e1"),
	})
	if n := mustApply(t, db, b); n != 3 {
		t.Fatalf("first apply: %d, want 3", n)
	}
	cp1 := mustCheckpoint(t, db, "north", ev)
	rows1 := allRecords(t, db, ev)

	if n := mustApply(t, db, b); n != 0 {
		t.Fatalf("second apply of the same batch applied %d, want 0", n)
	}
	cp2 := mustCheckpoint(t, db, "north", ev)
	if cp2.Applied != cp1.Applied || cp2.LastSeq != cp1.LastSeq || cp2.Rejected != cp1.Rejected {
		t.Fatalf("checkpoint changed by a replayed batch: %+v -> %+v", cp1, cp2)
	}
	if rows2 := allRecords(t, db, ev); !reflect.DeepEqual(rows1, rows2) {
		t.Fatalf("rows changed by a replayed batch:\n%v\n%v", rows1, rows2)
	}

	// A batch overlapping the checkpoint applies only what lies above it: the
	// re-delivered upsert of e1 at seq 1 must not resurrect the deleted e1.
	n := mustApply(t, db, batch("north", ev, []projections.Change{
		upsertAt(t, 1, "north", ev, "event", "e1", map[string]any{"n": 1}),
		upsertAt(t, 3, "north", ev, "event", "e3-never", map[string]any{"n": 3}),
		upsertAt(t, 4, "north", ev, "event", "e4", map[string]any{"n": 4}),
	}))
	if n != 1 {
		t.Fatalf("overlapping batch applied %d, want 1", n)
	}
	if _, ok := recordByID(t, db, "north", ev, "e1"); ok {
		t.Fatal("replayed seq 1 resurrected deleted e1")
	}
	if _, ok := recordByID(t, db, "north", ev, "e3-never"); ok {
		t.Fatal("change at the checkpoint (seq 3) was applied")
	}
	if _, ok := recordByID(t, db, "north", ev, "e4"); !ok {
		t.Fatal("change above the checkpoint (seq 4) missing")
	}
	if cp := mustCheckpoint(t, db, "north", ev); cp.Applied != 4 || cp.LastSeq != 4 {
		t.Fatalf("checkpoint %+v, want Applied 4 LastSeq 4", cp)
	}
}

func TestDB_Apply_OlderVersionNeverOverwritesNewer(t *testing.T) {
	db := mustOpenDB(t)
	// Both changes lie above the checkpoint; the newer one comes first.
	mustApply(t, db, batch("north", ev, []projections.Change{
		upsertAt(t, 9, "north", ev, "event", "e1", map[string]any{"rev": "new"}),
		upsertAt(t, 5, "north", ev, "event", "e1", map[string]any{"rev": "old"}),
		upsertAt(t, 8, "north", ev, "event", "e2", map[string]any{"rev": "kept"}),
		deleteAt(6, "north", ev, "event", "e2"), // older delete must not remove version 8
	}))
	e1, ok := recordByID(t, db, "north", ev, "e1")
	if !ok || e1.Version != 9 || e1.Body["rev"] != "new" {
		t.Fatalf("e1 = %+v (present %v), want version 9 rev new", e1, ok)
	}
	e2, ok := recordByID(t, db, "north", ev, "e2")
	if !ok || e2.Version != 8 {
		t.Fatalf("older delete removed e2 (present %v, version %d)", ok, e2.Version)
	}

	// The store agrees with the reference projection.
	ref := projectionstest.NewState()
	ref.Apply(projections.Stream{Unit: "north", Channel: ev}, batch("north", ev, []projections.Change{
		upsertAt(t, 9, "north", ev, "event", "e1", map[string]any{"rev": "new"}),
		upsertAt(t, 5, "north", ev, "event", "e1", map[string]any{"rev": "old"}),
		upsertAt(t, 8, "north", ev, "event", "e2", map[string]any{"rev": "kept"}),
		deleteAt(6, "north", ev, "event", "e2"),
	}).Batch)
	for _, r := range ref.Sorted() {
		got, ok := recordByID(t, db, r.Addr.OrgUnit, ev, r.Addr.RecordID)
		if !ok || got.Version != r.Version || string(got.RawBody) != string(r.Body) {
			t.Fatalf("store differs from reference for %v: got %+v", r.Addr, got)
		}
	}
}

func TestDB_Apply_RecordsRejects(t *testing.T) {
	db := mustOpenDB(t)
	good := upsertAt(t, 1, "north", ev, "event", "e1", map[string]any{"a": 1})
	// Real rejects, produced by folding real messages: garbage bytes and a
	// subject with a bad kind token.
	msgs := []projections.Message{
		{Subject: "fs.org.north.events.event.e2", Seq: 2, Data: []byte{0xc1, 0x00}},
		{Subject: "fs.org.north.events.space*ship.x", Seq: 3, Data: []byte{0x80}},
	}
	folded := projections.Fold(msgs)
	if len(folded.Rejects) != 2 {
		t.Fatalf("fold gave %d rejects, want 2", len(folded.Rejects))
	}
	b := batch("north", ev, []projections.Change{good}, folded.Rejects...)
	if n := mustApply(t, db, b); n != 1 {
		t.Fatalf("applied %d, want 1", n)
	}
	cp := mustCheckpoint(t, db, "north", ev)
	if cp.Rejected != 2 || cp.Applied != 1 || cp.LastSeq != 3 {
		t.Fatalf("checkpoint %+v, want Rejected 2 Applied 1 LastSeq 3", cp)
	}
	errs, err := db.SyncErrors(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 2 {
		t.Fatalf("%d sync errors, want 2: %+v", len(errs), errs)
	}
	bySeq := map[uint64]store.SyncError{}
	for _, e := range errs {
		bySeq[e.Seq] = e
	}
	for _, r := range folded.Rejects {
		e, ok := bySeq[r.Seq]
		if !ok {
			t.Fatalf("no sync error for seq %d", r.Seq)
		}
		if e.Code != r.Code || e.Message != r.Err.Error() || e.Subject != r.Subject || e.Unit != "north" || e.Channel != ev {
			t.Fatalf("sync error %+v does not match reject %+v", e, r)
		}
	}
	if errs[0].Seq != 3 || errs[1].Seq != 2 { // newest first
		t.Fatalf("sync errors not newest first: seqs %d, %d", errs[0].Seq, errs[1].Seq)
	}
	if bySeq[2].Code != "malformed" || bySeq[3].Code != "bad_subject" {
		t.Fatalf("codes %q, %q; want malformed, bad_subject", bySeq[2].Code, bySeq[3].Code)
	}

	// Replaying the batch records nothing new.
	mustApply(t, db, b)
	if n, err := db.CountSyncErrors(context.Background()); err != nil || n != 2 {
		t.Fatalf("after replay: %d sync errors (%v), want 2", n, err)
	}
	if cp := mustCheckpoint(t, db, "north", ev); cp.Rejected != 2 {
		t.Fatalf("replay changed Rejected to %d", cp.Rejected)
	}
}

func TestDB_Apply_WrongStreamIsRejected(t *testing.T) {
	db := mustOpenDB(t)
	n := mustApply(t, db, batch("north", ev, []projections.Change{
		upsertAt(t, 1, "north", ev, "event", "ok", map[string]any{"a": 1}),
		upsertAt(t, 2, "south", ev, "event", "other-unit", map[string]any{"a": 2}),
		upsertAt(t, 3, "north", events.ChannelDocuments, "document", "other-channel", map[string]any{"a": 3}),
	}))
	if n != 1 {
		t.Fatalf("applied %d, want 1", n)
	}
	if got := mustCount(t, db, store.Query{Channel: ev, Unit: store.AnyUnit}); got != 1 {
		t.Fatalf("events records = %d, want 1", got)
	}
	if got := mustCount(t, db, store.Query{Channel: events.ChannelDocuments, Unit: store.AnyUnit}); got != 0 {
		t.Fatalf("documents records = %d, want 0", got)
	}
	errs, err := db.SyncErrors(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 2 {
		t.Fatalf("%d sync errors, want 2", len(errs))
	}
	for _, e := range errs {
		if e.Code != "wrong_stream" || (e.Seq != 2 && e.Seq != 3) || e.Unit != "north" || e.Channel != ev {
			t.Fatalf("sync error %+v, want wrong_stream at seq 2 or 3 on north/events", e)
		}
	}
	if !strings.Contains(errs[0].Message, "north/events") {
		t.Fatalf("message %q does not name the stream read", errs[0].Message)
	}
	if cp := mustCheckpoint(t, db, "north", ev); cp.Rejected != 2 || cp.Applied != 1 || cp.LastSeq != 3 {
		t.Fatalf("checkpoint %+v, want Rejected 2 Applied 1 LastSeq 3", cp)
	}
	if cp := mustCheckpoint(t, db, "south", ev); cp != (store.Checkpoint{Unit: "south", Channel: ev}) {
		t.Fatalf("south checkpoint touched: %+v", cp)
	}
}

func TestDB_Apply_CheckpointNeverGoesBackwards(t *testing.T) {
	db := mustOpenDB(t)
	b := batch("north", ev, []projections.Change{upsertAt(t, 10, "north", ev, "event", "e1", map[string]any{"a": 1})})
	mustApply(t, db, b)

	// A batch claiming an older LastSeq (e.g. a durable re-created from an
	// old position) leaves the checkpoint where it was.
	old := batch("north", ev, []projections.Change{upsertAt(t, 4, "north", ev, "event", "e0", map[string]any{"a": 0})})
	if n := mustApply(t, db, old); n != 0 {
		t.Fatalf("applied %d changes below the checkpoint", n)
	}
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 10 {
		t.Fatalf("LastSeq went from 10 to %d", cp.LastSeq)
	}
	empty := store.Batch{Unit: "north", Channel: ev}
	empty.LastSeq = 2
	mustApply(t, db, empty)
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 10 {
		t.Fatalf("empty batch moved LastSeq from 10 to %d", cp.LastSeq)
	}

	// A batch of nothing but higher sequences of other channels (LastSeq only)
	// still advances it.
	skip := store.Batch{Unit: "north", Channel: ev}
	skip.LastSeq = 15
	mustApply(t, db, skip)
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 15 {
		t.Fatalf("LastSeq %d, want 15", cp.LastSeq)
	}
}

func TestDB_Apply_SnapshotDoneSticks(t *testing.T) {
	db := mustOpenDB(t)
	if cp := mustCheckpoint(t, db, "north", ev); cp.SnapshotDone {
		t.Fatal("fresh checkpoint has SnapshotDone")
	}
	b := batch("north", ev, []projections.Change{upsertAt(t, 1, "north", ev, "event", "e1", map[string]any{"a": 1})})
	b.SnapshotDone = true
	mustApply(t, db, b)
	if cp := mustCheckpoint(t, db, "north", ev); !cp.SnapshotDone {
		t.Fatal("SnapshotDone not set")
	}
	for seq := uint64(2); seq <= 3; seq++ {
		mustApply(t, db, batch("north", ev, []projections.Change{upsertAt(t, seq, "north", ev, "event", "e1", map[string]any{"a": seq})}))
		if cp := mustCheckpoint(t, db, "north", ev); !cp.SnapshotDone {
			t.Fatalf("SnapshotDone cleared by a delta batch at seq %d", seq)
		}
	}
	// Even a replayed batch (skipped entirely) keeps it.
	mustApply(t, db, batch("north", ev, nil))
	if cp := mustCheckpoint(t, db, "north", ev); !cp.SnapshotDone {
		t.Fatal("SnapshotDone cleared by an empty batch")
	}
	cps, err := db.Checkpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != 1 || !cps[0].SnapshotDone || cps[0].LastSeq != 3 {
		t.Fatalf("Checkpoints() = %+v", cps)
	}
}

func TestDB_Apply_RejectsUnknownChannel(t *testing.T) {
	db := mustOpenDB(t)
	_, err := db.Apply(context.Background(), store.Batch{Unit: "north", Channel: "gossip"})
	if err == nil {
		t.Fatal("apply to an unknown channel succeeded")
	}
	cps, err := db.Checkpoints(context.Background())
	if err != nil || len(cps) != 0 {
		t.Fatalf("checkpoints after a refused batch: %+v (%v)", cps, err)
	}
}
