package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// mustStageApplied stages n upserts of north/events as one download and
// applies it, leaving n rows to merge.
func mustStageApplied(tb testing.TB, db *store.DB, n int) {
	tb.Helper()
	ctx := context.Background()
	if _, _, err := db.BeginStaging(ctx, time.Hour, time.Now()); err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < n; i += 1000 {
		var cs []projections.Change
		for j := i; j < min(i+1000, n); j++ {
			cs = append(cs, upsertAt(tb, uint64(j+1), "north", events.ChannelEvents, "event", fmt.Sprintf("r-%06d", j), map[string]any{"n": j}))
		}
		b := batch("north", events.ChannelEvents, cs)
		b.Stage = true
		mustApply(tb, db, b)
	}
	if ok, err := db.MarkStagingReady(ctx, time.Now()); err != nil || !ok {
		tb.Fatalf("staging ready: %v %v", ok, err)
	}
	if _, err := db.ApplyStaged(ctx, time.Now()); err != nil {
		tb.Fatal(err)
	}
}

// TestDB_MergeApplied_YieldsToWrites: a local write made while a merge
// chunk holds the single writer gets in before the chunk is done, not
// after it.
func TestDB_MergeApplied_YieldsToWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "device.db")
	db := mustOpenPath(t, path)
	const rows = 1000
	mustStageApplied(t, db, rows)

	merged := make(chan error, 1)
	var total int
	go func() {
		var err error
		total, err = db.MergeApplied(ctx, rows) // one chunk could take every row
		merged <- err
	}()
	// The merge holds the write lock once another connection cannot take it.
	probe, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	probe.SetMaxOpenConns(1)
	fstest.Eventually(t, 10*time.Second, func() bool {
		tx, err := probe.BeginTx(ctx, nil)
		if err != nil {
			return false
		}
		defer tx.Rollback()
		_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('probe', '1')`)
		return err != nil
	}, "the merge never held the write lock")

	w := store.Write{Addr: events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "edited"},
		Op: events.OpUpsert, Body: mustBody(t, map[string]any{"title": "written during the merge"})}
	if _, err := db.LocalWrite(ctx, w, "m-during-merge", time.Now()); err != nil {
		t.Fatal(err)
	}
	st, err := db.StagingState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Merging == 0 {
		t.Fatalf("the write waited for the whole merge (%d rows) to finish", rows)
	}
	if err := <-merged; err != nil {
		t.Fatal(err)
	}
	st, err = db.StagingState(ctx)
	if err != nil || st.Merging != 0 || total != rows {
		t.Fatalf("after the merge: %d merged, staging %+v %v", total, st, err)
	}
	if n := mustCount(t, db, store.Query{Channel: events.ChannelEvents, Unit: "north"}); n != rows+1 {
		t.Fatalf("live view holds %d records, want %d", n, rows+1)
	}
}
