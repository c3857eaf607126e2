package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// mustStage stages changes of north/events as one batch of a running
// staged download.
func mustStage(tb testing.TB, db *store.DB, changes ...projections.Change) {
	tb.Helper()
	b := batch("north", ev, changes)
	b.Stage = true
	mustApply(tb, db, b)
}

func mustBeginStaging(tb testing.TB, db *store.DB) {
	tb.Helper()
	if _, _, err := db.BeginStaging(context.Background(), time.Hour, time.Now()); err != nil {
		tb.Fatal(err)
	}
}

func mustMarkReady(tb testing.TB, db *store.DB) {
	tb.Helper()
	if ready, err := db.MarkStagingReady(context.Background(), time.Now()); err != nil || !ready {
		tb.Fatalf("MarkStagingReady = %v, %v; want ready", ready, err)
	}
}

func mustApplyStaged(tb testing.TB, db *store.DB) int {
	tb.Helper()
	n, err := db.ApplyStaged(context.Background(), time.Now())
	if err != nil {
		tb.Fatalf("ApplyStaged: %v", err)
	}
	return n
}

// versions returns the version of each live north/events record by id.
func versions(tb testing.TB, db *store.DB) map[string]uint64 {
	tb.Helper()
	out := map[string]uint64{}
	for _, r := range mustRecords(tb, db, store.Query{Channel: ev, Unit: "north", Limit: 10000}) {
		out[r.RecordID] = r.Version
	}
	return out
}

func requireVersions(tb testing.TB, db *store.DB, when string, want map[string]uint64) {
	tb.Helper()
	got := versions(tb, db)
	if len(got) != len(want) {
		tb.Fatalf("%s: live view %v, want %v", when, got, want)
	}
	for id, v := range want {
		if got[id] != v {
			tb.Fatalf("%s: live view %v, want %v", when, got, want)
		}
	}
}

// liveLoaded returns a store whose north/events holds a@1 and b@2, loaded
// live (the initial snapshot).
func liveLoaded(t *testing.T) *store.DB {
	t.Helper()
	db := mustOpenDB(t)
	b := batch("north", ev, []projections.Change{upsertAt(t, 1, "north", ev, "event", "a", map[string]any{"v": 1}),
		upsertAt(t, 2, "north", ev, "event", "b", map[string]any{"v": 2})})
	b.SnapshotDone = true
	mustApply(t, db, b)
	return db
}

func TestDB_ApplyStaged_RunningDownloadWaitsForItsOwnApply(t *testing.T) {
	ctx := context.Background()
	db := liveLoaded(t)
	mustBeginStaging(t, db) // download 1: a@3, completed
	mustStage(t, db, upsertAt(t, 3, "north", ev, "event", "a", map[string]any{"v": 3}))
	mustMarkReady(t, db)

	mustBeginStaging(t, db) // download 2 starts: b@4, then Apply while it runs
	mustStage(t, db, upsertAt(t, 4, "north", ev, "event", "b", map[string]any{"v": 4}))
	if n := mustApplyStaged(t, db); n != 1 {
		t.Fatalf("Apply made %d changes live, want the 1 of the completed download", n)
	}
	requireVersions(t, db, "after Apply during download 2", map[string]uint64{"a": 3, "b": 2})
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 3 {
		t.Fatalf("live checkpoint %d after Apply, want 3 (the completed download's)", cp.LastSeq)
	}
	mustStage(t, db, upsertAt(t, 5, "north", ev, "event", "a", map[string]any{"v": 5}), deleteAt(6, "north", ev, "event", "b"))
	requireVersions(t, db, "download 2 goes on after the Apply", map[string]uint64{"a": 3, "b": 2})
	if cp, err := db.StagingCheckpoint(ctx, "north", ev); err != nil || cp.LastSeq != 6 {
		t.Fatalf("staged position %+v, %v; want 6", cp, err)
	}
	if _, err := db.ApplyStaged(ctx, time.Now()); !errors.Is(err, store.ErrNothingToApply) {
		t.Fatalf("Apply with only a running download: %v, want ErrNothingToApply", err)
	}
	if st, err := db.StagingState(ctx); err != nil || st.Changes != 0 || st.Downloading != 2 || st.Ready != nil {
		t.Fatalf("staging %+v, %v; want 2 records downloading (a, b), none ready", st, err)
	}

	mustMarkReady(t, db)
	if n := mustApplyStaged(t, db); n != 2 {
		t.Fatalf("second Apply made %d changes live, want 2", n)
	}
	requireVersions(t, db, "after download 2's Apply", map[string]uint64{"a": 5})
	if _, err := db.MergeApplied(ctx, 1); err != nil {
		t.Fatal(err)
	}
	requireVersions(t, db, "after the merge", map[string]uint64{"a": 5})
	if cp := mustCheckpoint(t, db, "north", ev); cp.LastSeq != 6 {
		t.Fatalf("live checkpoint %d, want 6", cp.LastSeq)
	}
}

// Two completed downloads waiting: one Apply makes both live, the newer
// state of a record staged by both wins, in the view and after the merge.
func TestDB_ApplyStaged_TwoCompletedDownloads(t *testing.T) {
	ctx := context.Background()
	db := liveLoaded(t)
	mustBeginStaging(t, db)
	mustStage(t, db, upsertAt(t, 3, "north", ev, "event", "a", map[string]any{"v": 3}),
		upsertAt(t, 4, "north", ev, "event", "c", map[string]any{"v": 4}))
	mustMarkReady(t, db)
	mustBeginStaging(t, db)
	mustStage(t, db, deleteAt(5, "north", ev, "event", "a"), upsertAt(t, 6, "north", ev, "event", "c", map[string]any{"v": 6}),
		upsertAt(t, 7, "north", ev, "event", "b", map[string]any{"v": 7}))
	mustMarkReady(t, db)
	if st, err := db.StagingState(ctx); err != nil || st.Changes != 3 {
		t.Fatalf("staging %+v, %v; want 3 records changed (a, b, c)", st, err)
	}
	requireVersions(t, db, "before Apply", map[string]uint64{"a": 1, "b": 2})
	if n := mustApplyStaged(t, db); n != 3 {
		t.Fatalf("Apply: %d changes, want 3", n)
	}
	want := map[string]uint64{"b": 7, "c": 6}
	requireVersions(t, db, "after Apply", want)
	if n := mustCount(t, db, store.Query{Channel: ev, Unit: "north"}); n != 2 {
		t.Fatalf("count %d after Apply, want 2", n)
	}
	for { // merge one row at a time: every step shows the same view
		n, err := db.MergeApplied(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		requireVersions(t, db, "during the merge", want)
	}
	if st, err := db.StagingState(ctx); err != nil || st.Merging != 0 {
		t.Fatalf("staging %+v, %v; want everything merged", st, err)
	}
	requireVersions(t, db, "after the merge", want)
}

// A write after Apply, before the merge, is based on the version the view
// shows, and the pending record reports that version.
func TestDB_LocalWrite_BaseIsAppliedStagedVersion(t *testing.T) {
	ctx := context.Background()
	db := liveLoaded(t)
	mustBeginStaging(t, db)
	mustStage(t, db, upsertAt(t, 3, "north", ev, "event", "a", map[string]any{"v": 3}), deleteAt(4, "north", ev, "event", "b"))
	mustMarkReady(t, db)
	mustApplyStaged(t, db)
	for id, want := range map[string]uint64{"a": 3, "b": 0} {
		m, err := db.LocalWrite(ctx, store.Write{Addr: events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: id},
			Op: events.OpUpsert, Body: mustBody(t, map[string]any{"mine": true})}, "m-"+id, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if m.BaseVersion != want {
			t.Errorf("write to %s based on version %d, want %d (the applied, not yet merged state)", id, m.BaseVersion, want)
		}
		if r, ok := recordByID(t, db, "north", ev, id); !ok || !r.Pending || r.Version != want {
			t.Errorf("pending %s: %+v, want version %d", id, r, want)
		}
	}
}

// A download interrupted for longer than the resume window is discarded,
// but a completed one waiting for Apply is kept: the next download
// continues from its position.
func TestDB_BeginStaging_DiscardsOnlyTheInterruptedDownload(t *testing.T) {
	ctx := context.Background()
	db := liveLoaded(t)
	mustBeginStaging(t, db)
	mustStage(t, db, upsertAt(t, 3, "north", ev, "event", "a", map[string]any{"v": 3}))
	mustMarkReady(t, db)
	mustBeginStaging(t, db) // interrupted after one batch
	mustStage(t, db, upsertAt(t, 4, "north", ev, "event", "b", map[string]any{"v": 4}))

	resumed, discarded, err := db.BeginStaging(ctx, time.Hour, time.Now().Add(2*time.Hour))
	if err != nil || resumed || !discarded {
		t.Fatalf("BeginStaging after the window: resumed %v, discarded %v, %v; want discarded", resumed, discarded, err)
	}
	if cp, err := db.StagingCheckpoint(ctx, "north", ev); err != nil || cp.LastSeq != 3 {
		t.Fatalf("position after the discard %+v, %v; want the completed download's 3", cp, err)
	}
	if st, err := db.StagingState(ctx); err != nil || st.Changes != 1 || st.Downloading != 0 || st.Ready == nil {
		t.Fatalf("staging %+v, %v; want the completed download's 1 change ready", st, err)
	}
	mustApplyStaged(t, db)
	requireVersions(t, db, "after Apply", map[string]uint64{"a": 3, "b": 2})
}
