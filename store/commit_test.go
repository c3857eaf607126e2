package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func mustOpenInternal(tb testing.TB) *DB {
	tb.Helper()
	db, err := Open(context.Background(), filepath.Join(tb.TempDir(), "device.db"), Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

func putMeta(key string) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		_, err := tx.ExecContext(context.Background(), `INSERT INTO meta (key, value) VALUES (?, 'x')`, key)
		return err
	}
}

func metaKeys(tb testing.TB, db *DB, keys ...string) map[string]bool {
	tb.Helper()
	got := map[string]bool{}
	for _, k := range keys {
		v, err := db.Meta(context.Background(), k)
		if err != nil {
			tb.Fatal(err)
		}
		got[k] = v == "x"
	}
	return got
}

// TestDB_Tx_GroupCommit: operations that wait while a transaction runs
// commit together in the next one (one commit for all); one that fails,
// or whose context ended, leaves nothing and fails alone; the others of
// its group are committed.
func TestDB_Tx_GroupCommit(t *testing.T) {
	ctx := context.Background()
	db := mustOpenInternal(t)
	release, holding := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // holds the writer until the others wait
		defer wg.Done()
		if err := db.tx(ctx, func(tx *sql.Tx) error {
			close(holding)
			<-release
			return putMeta("first")(tx)
		}); err != nil {
			t.Error(err)
		}
	}()
	<-holding
	before := db.Commits()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	errFail := errors.New("this operation fails")
	results := map[string]error{}
	var mu sync.Mutex
	ops := map[string]func(*sql.Tx) error{
		"ok1": putMeta("ok1"), "ok2": putMeta("ok2"), "ok3": putMeta("ok3"),
		"fails": func(tx *sql.Tx) error {
			if err := putMeta("fails")(tx); err != nil {
				return err
			}
			return errFail // after writing: its write must go
		},
		"dup": putMeta("ok1"), // a constraint error, or the duplicate of ok1 if it ran first
	}
	for name, fn := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.shortTx(ctx, fn)
			mu.Lock()
			results[name] = err
			mu.Unlock()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := db.shortTx(cancelled, putMeta("cancelled"))
		mu.Lock()
		results["cancelled"] = err
		mu.Unlock()
	}()
	for db.commit.queued.Load() < int64(len(ops)) { // the cancelled one is refused at once
		time.Sleep(time.Millisecond) // pacing: waiting for the goroutines to queue
	}
	close(release)
	wg.Wait()

	// Without grouping: 4 commits (first, ok1 or dup, ok2, ok3). The held
	// transaction may take the waiting ones in (1) or, past groupWindow,
	// leave them to one group of their own (2).
	if commits := db.Commits() - before; commits > 2 {
		t.Errorf("%d commits for the held transaction and %d waiting operations, want them grouped (at most 2)", commits, len(ops))
	}
	if !errors.Is(results["fails"], errFail) || !errors.Is(results["cancelled"], context.Canceled) {
		t.Errorf("results %v: want fails and cancelled to fail", results)
	}
	if (results["ok1"] == nil) == (results["dup"] == nil) {
		t.Errorf("ok1: %v, dup: %v; want exactly one of the two writes of one key to fail", results["ok1"], results["dup"])
	}
	if results["ok2"] != nil || results["ok3"] != nil {
		t.Errorf("ok2: %v, ok3: %v", results["ok2"], results["ok3"])
	}
	want := map[string]bool{"first": true, "ok1": true, "ok2": true, "ok3": true, "fails": false, "cancelled": false}
	got := metaKeys(t, db, "first", "ok1", "ok2", "ok3", "fails", "cancelled")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("committed %v, want %v", got, want)
	}
}

// TestDB_Tx_CancelledDuringGroup: a caller whose context ends while its
// operation runs in a group stops at its next statement and fails alone;
// the statement already running is not interrupted (SQLite would roll the
// whole group back), so the others of the group are committed.
func TestDB_Tx_CancelledDuringGroup(t *testing.T) {
	ctx := context.Background()
	db := mustOpenInternal(t)
	cctx, cancel := context.WithCancel(ctx)
	release, holding := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var holdErr, lateErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		holdErr = db.tx(cctx, func(tx *sql.Tx) error {
			if err := putMeta("before-cancel")(tx); err != nil {
				return err
			}
			close(holding)
			<-release
			cancel()
			_, err := tx.ExecContext(cctx, `INSERT INTO meta (key, value) VALUES ('after-cancel', 'x')`)
			return err
		})
	}()
	<-holding
	go func() {
		defer wg.Done()
		lateErr = db.shortTx(ctx, putMeta("other"))
	}()
	for db.commit.queued.Load() < 1 {
		time.Sleep(time.Millisecond) // pacing: waiting for the second operation to queue
	}
	close(release)
	wg.Wait()
	if !errors.Is(holdErr, context.Canceled) || lateErr != nil {
		t.Fatalf("cancelled operation: %v, other: %v; want canceled and nil", holdErr, lateErr)
	}
	got := metaKeys(t, db, "before-cancel", "after-cancel", "other")
	if !got["other"] || got["before-cancel"] || got["after-cancel"] {
		t.Fatalf("committed %v, want only other", got)
	}
}

// TestDB_Tx_LongOperationsStartGroups: a long operation (db.tx: a
// download batch, a merge chunk) waiting behind a short one does not
// join the short one's group, so the short write does not wait for it.
func TestDB_Tx_LongOperationsStartGroups(t *testing.T) {
	ctx := context.Background()
	db := mustOpenInternal(t)
	release, holding := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs[0] = db.tx(ctx, func(tx *sql.Tx) error {
			close(holding)
			<-release
			return putMeta("held")(tx)
		})
	}()
	<-holding
	before := db.Commits()
	var shortDone, longStarted time.Time
	queue := func(i int, run func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = run() }()
		for db.commit.queued.Load() < int64(i) {
			time.Sleep(time.Millisecond) // pacing: waiting for it to queue, so the order is known
		}
	}
	queue(1, func() error {
		err := db.shortTx(ctx, putMeta("short"))
		shortDone = time.Now()
		return err
	})
	queue(2, func() error {
		return db.tx(ctx, func(tx *sql.Tx) error {
			longStarted = time.Now()
			time.Sleep(50 * time.Millisecond) // pacing: a long operation
			return putMeta("long")(tx)
		})
	})
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("operation %d: %v", i, err)
		}
	}
	if commits := db.Commits() - before; commits < 2 {
		t.Errorf("%d commits: the long operation was grouped with the short one before it", commits)
	}
	if !shortDone.Before(longStarted.Add(50 * time.Millisecond)) {
		t.Errorf("the short write was answered %v after the long operation started: it waited for it", shortDone.Sub(longStarted))
	}
	if got := metaKeys(t, db, "held", "short", "long"); !got["held"] || !got["short"] || !got["long"] {
		t.Fatalf("committed %v, want all three", got)
	}
}
