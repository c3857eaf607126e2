package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// The apply tests check the atomicity of refresh mode's Apply: the staged
// download changes a multi-record invariant (the finding "counter" has
// body n = the number of the other findings; the download adds findings,
// deletes some and updates the counter, and updates events too), and the
// live view must show the whole old state or the whole new state, never a
// mix, whether the agent is killed in the middle of ApplyStaged or of the
// background merge after it, and to a reader running meanwhile.

const applyUnit = "north"

// applyFixture is a prepared device store with a ready staged download.
type applyFixture struct {
	path     string
	old, new viewState
	oldSeq   uint64
	newSeq   uint64
	staged   int // staged changes the apply makes live
}

// viewState is a live view: "kind/id" -> version.
type viewState map[string]uint64

// applySpec sizes a fixture.
type applySpec struct {
	events, updatedEvents    int
	findings, added, removed int
}

var crashSpec = applySpec{events: 300, updatedEvents: 100, findings: 50, added: 60, removed: 10}

// prepareApplyStore builds the fixture at path and closes the store.
func prepareApplyStore(t *testing.T, path string, sp applySpec) applyFixture {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fx := applyFixture{path: path, old: viewState{}}
	var seq uint64
	change := func(kind, id string, n int, deleted bool) projections.Change {
		seq++
		c := projections.Change{Seq: seq, Addr: events.Address{OrgUnit: applyUnit, Channel: events.ChannelEvents, Kind: kind, RecordID: id},
			EventID: fmt.Sprintf("e%d", seq), Deleted: deleted, UpdatedAt: time.Now().UnixMilli()}
		if !deleted {
			c.Body, err = msgpack.Marshal(map[string]any{"n": n})
			if err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	apply := func(changes []projections.Change, stage, snapshot bool) {
		t.Helper()
		for len(changes) > 0 {
			b := changes[:min(len(changes), 40)]
			changes = changes[len(b):]
			if _, err := db.Apply(ctx, store.Batch{Unit: applyUnit, Channel: events.ChannelEvents, Stage: stage, SnapshotDone: snapshot,
				Batch: projections.Batch{Changes: b, LastSeq: b[len(b)-1].Seq}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The live state.
	var live []projections.Change
	for i := 0; i < sp.events; i++ {
		live = append(live, change("event", fmt.Sprintf("ev-%04d", i), 0, false))
	}
	for i := 0; i < sp.findings; i++ {
		live = append(live, change("finding", fmt.Sprintf("f-%04d", i), 0, false))
	}
	live = append(live, change("finding", "counter", sp.findings, false))
	for _, c := range live {
		fx.old[c.Addr.Kind+"/"+c.Addr.RecordID] = c.Seq
	}
	apply(live, false, true)
	fx.oldSeq = seq

	// The staged download: the counter first, so that any partial state
	// breaks the invariant.
	if _, _, err := db.BeginStaging(ctx, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	fx.new = viewState{}
	for k, v := range fx.old {
		fx.new[k] = v
	}
	staged := []projections.Change{change("finding", "counter", sp.findings+sp.added-sp.removed, false)}
	for i := 0; i < sp.added; i++ {
		staged = append(staged, change("finding", fmt.Sprintf("f-%04d", sp.findings+i), 1, false))
	}
	for i := 0; i < sp.removed; i++ {
		staged = append(staged, change("finding", fmt.Sprintf("f-%04d", i), 0, true))
	}
	for i := 0; i < sp.updatedEvents; i++ {
		staged = append(staged, change("event", fmt.Sprintf("ev-%04d", i*sp.events/sp.updatedEvents), 1, false))
	}
	for _, c := range staged {
		k := c.Addr.Kind + "/" + c.Addr.RecordID
		if c.Deleted {
			delete(fx.new, k)
		} else {
			fx.new[k] = c.Seq
		}
	}
	apply(staged, true, false)
	fx.newSeq, fx.staged = seq, len(staged)
	if ready, err := db.MarkStagingReady(ctx, time.Now()); err != nil || !ready {
		t.Fatalf("staging ready: %v %v", ready, err)
	}
	st, err := db.StagingState(ctx)
	if err != nil || st.Changes != fx.staged {
		t.Fatalf("staging %+v, %v; want %d changes", st, err, fx.staged)
	}
	return fx
}

// copyStore copies the fixture's files into dir and returns the copy's path.
func copyStore(t *testing.T, src, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		in, err := os.Open(src + suffix)
		if errors.Is(err, os.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(dst + suffix)
		if err == nil {
			_, err = io.Copy(out, in)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		in.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// findingsInvariant checks the counter against the other findings of one
// read and returns (counter n, other findings).
func findingsInvariant(recs []store.Record) (n, others int, err error) {
	found := false
	for _, r := range recs {
		if r.Kind != "finding" {
			continue
		}
		if r.RecordID != "counter" {
			others++
			continue
		}
		var b struct {
			N int `msgpack:"n"`
		}
		if err := msgpack.Unmarshal(r.RawBody, &b); err != nil {
			return 0, 0, err
		}
		n, found = b.N, true
	}
	switch {
	case !found:
		return 0, others, fmt.Errorf("no counter among %d findings", others)
	case n != others:
		return n, others, fmt.Errorf("counter says %d findings, the view holds %d", n, others)
	}
	return n, others, nil
}

// liveState reads the whole live view of the unit and checks the invariant.
func liveState(t *testing.T, db *store.DB) viewState {
	t.Helper()
	recs, err := db.Records(context.Background(), store.Query{Channel: events.ChannelEvents, Unit: applyUnit, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := findingsInvariant(recs); err != nil {
		t.Fatalf("invariant broken: %v", err)
	}
	s := viewState{}
	for _, r := range recs {
		s[r.Kind+"/"+r.RecordID] = r.Version
	}
	return s
}

func (s viewState) equal(o viewState) bool {
	if len(s) != len(o) {
		return false
	}
	for k, v := range s {
		if w, ok := o[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// diff describes how s differs from want, briefly.
func (s viewState) diff(want viewState) string {
	var d []string
	for k, v := range want {
		if got, ok := s[k]; !ok {
			d = append(d, "missing "+k)
		} else if got != v {
			d = append(d, fmt.Sprintf("%s at v%d, want v%d", k, got, v))
		}
	}
	for k := range s {
		if _, ok := want[k]; !ok {
			d = append(d, "extra "+k)
		}
	}
	sort.Strings(d)
	if len(d) > 8 {
		d = append(d[:8], fmt.Sprintf("... %d more", len(d)-8))
	}
	return strings.Join(d, "; ")
}

// checkNewAfterMerge merges what is left and checks the device is in the
// new state with nothing left to apply or merge.
func checkNewAfterMerge(t *testing.T, db *store.DB, fx applyFixture) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.MergeApplied(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if s := liveState(t, db); !s.equal(fx.new) {
		t.Fatalf("after the merge the view is not the new state: %s", s.diff(fx.new))
	}
	st, err := db.StagingState(ctx)
	if err != nil || st.Changes != 0 || st.Merging != 0 {
		t.Fatalf("after the merge staging is %+v, %v", st, err)
	}
	if cp, err := db.Checkpoint(ctx, applyUnit, events.ChannelEvents); err != nil || cp.LastSeq != fx.newSeq {
		t.Fatalf("checkpoint %+v, %v; want last_seq %d", cp, err, fx.newSeq)
	}
	if _, err := db.ApplyStaged(ctx, time.Now()); !errors.Is(err, store.ErrNothingToApply) {
		t.Fatalf("a second apply: %v, want ErrNothingToApply", err)
	}
}

// verifyAfterKill opens the store a killed applier left and checks it
// holds the old state with the staging intact, or the new state; then
// finishes the apply and checks the new state. It reports which.
func verifyAfterKill(t *testing.T, fx applyFixture, path string) string {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := liveState(t, db)
	switch {
	case s.equal(fx.old):
		st, err := db.StagingState(ctx)
		if err != nil || st.Changes != fx.staged || st.Ready == nil || st.Merging != 0 {
			t.Fatalf("old state, but the staging is %+v, %v; want %d ready changes", st, err, fx.staged)
		}
		if cp, err := db.Checkpoint(ctx, applyUnit, events.ChannelEvents); err != nil || cp.LastSeq != fx.oldSeq {
			t.Fatalf("old state, but checkpoint %+v, %v; want last_seq %d", cp, err, fx.oldSeq)
		}
		n, err := db.ApplyStaged(ctx, time.Now())
		if err != nil || n != fx.staged {
			t.Fatalf("apply after the kill: %d, %v; want %d", n, err, fx.staged)
		}
		if s := liveState(t, db); !s.equal(fx.new) {
			t.Fatalf("after the apply the view is not the new state: %s", s.diff(fx.new))
		}
		checkNewAfterMerge(t, db, fx)
		return "old"
	case s.equal(fx.new):
		st, err := db.StagingState(ctx)
		if err != nil || st.Changes != 0 {
			t.Fatalf("new state, but the staging is %+v, %v", st, err)
		}
		if st.Merging > 0 {
			t.Logf("new state with %d of %d changes still to merge", st.Merging, fx.staged)
		}
		checkNewAfterMerge(t, db, fx)
		return "new"
	default:
		t.Fatalf("the view is neither the old nor the new state; against the old: %s; against the new: %s", s.diff(fx.old), s.diff(fx.new))
		return ""
	}
}

// runApplier applies FS_DB's staged download and merges it one change per
// transaction, slowly, announcing "applying", "applied N", "merged N".
func runApplier() int {
	ctx := context.Background()
	path := os.Getenv("FS_DB")
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("applying")
	n, err := db.ApplyStaged(ctx, time.Now())
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("applied", n)
	stop, err := throttleWriter(path)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	m, err := db.MergeApplied(ctx, 1)
	stop()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("merged", m)
	return 0
}

// throttleWriter slows every write transaction on path down: a second
// connection takes the write lock for 500µs of every 1.5ms, so each merge
// chunk waits a little (the busy handler sleeps) before it can begin.
// MergeApplied has no hook between its chunks; this stands in for a
// sleep between them.
func throttleWriter(path string) (stop func(), err error) {
	w, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
			}
			tx, err := w.Begin()
			if err != nil {
				return
			}
			time.Sleep(500 * time.Microsecond) // holds the write lock: the throttle itself, not synchronisation
			tx.Rollback()
			time.Sleep(time.Millisecond) // then lets the applier in
		}
	}()
	return func() {
		close(done)
		<-stopped
		w.Close()
	}, nil
}

// nextLine waits for c's next line starting with want, skipping others.
func (c *child) nextLine(t *testing.T, want string, timeout time.Duration) (string, bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return "", false
			}
			if strings.HasPrefix(line, "error") {
				t.Fatalf("child: %s", line)
			}
			if strings.HasPrefix(line, want) {
				return strings.TrimSpace(strings.TrimPrefix(line, want)), true
			}
		case <-deadline:
			t.Fatalf("child did not say %q within %s", want, timeout)
		}
	}
}

func TestApply_KilledMidApplyOrMerge(t *testing.T) {
	dir := t.TempDir()
	fx := prepareApplyStore(t, filepath.Join(dir, "prepared", "device.db"), crashSpec)

	// A run without a kill: the child works, and the merge's length
	// places the kills below.
	path := copyStore(t, fx.path, filepath.Join(dir, "run0"))
	c, _ := startChild(t, "applier", "applying", "FS_DB="+path)
	if n, _ := c.nextLine(t, "applied", 30*time.Second); n != fmt.Sprint(fx.staged) {
		t.Fatalf("applied %s, want %d", n, fx.staged)
	}
	start := time.Now()
	if n, _ := c.nextLine(t, "merged", 60*time.Second); n != fmt.Sprint(fx.staged) {
		t.Fatalf("merged %s, want %d", n, fx.staged)
	}
	merge := time.Since(start)
	if err := c.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("uninterrupted: merge of %d changes took %s", fx.staged, merge)
	if got := verifyAfterKill(t, fx, path); got != "new" {
		t.Fatalf("after a complete run the state is %s", got)
	}

	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	outcomes := map[string]int{}
	for i := 1; i <= 10; i++ {
		path := copyStore(t, fx.path, filepath.Join(dir, fmt.Sprintf("run%d", i)))
		c, _ := startChild(t, "applier", "applying", "FS_DB="+path)
		var at string
		if i%2 == 1 {
			d := time.Duration(rng.Int63n(int64(3*time.Millisecond) + 1))
			time.Sleep(d) // a random moment to kill at: the scenario, not synchronisation
			c.kill()
			at = fmt.Sprintf("%s after applying", d)
		} else {
			c.nextLine(t, "applied", 30*time.Second)
			d := time.Duration(rng.Int63n(int64(merge) * 4 / 5))
			time.Sleep(d) // a random moment into the merge: the scenario, not synchronisation
			c.kill()
			at = fmt.Sprintf("%s into the merge", d)
			// Lines the child wrote before dying are still in the pipe.
			if _, merged := c.drain("merged"); merged {
				at += " (after it finished)"
			}
		}
		got := verifyAfterKill(t, fx, path)
		outcomes[got+" state"]++
		t.Logf("kill %d, %s: %s state", i, at, got)
	}
	t.Logf("seed %d; after the kills: %v", seed, outcomes)
}

// drain reads c's remaining output (c is dead) and reports whether a line
// started with want.
func (c *child) drain(want string) (string, bool) {
	for line := range c.lines {
		if strings.HasPrefix(line, want) {
			return line, true
		}
	}
	return "", false
}

// TestDB_ApplyStaged reads the findings (the counter among them) in one
// query, over and over, while downloads are applied and merged: every
// read must see the counter agree with the other findings. The first
// download is merged slowly (many reads during the merge); then 40 small
// ones are applied and merged at full speed, so reads also straddle the
// moment an apply is followed by the first merge chunk (the counter,
// which sorts before the other findings, is merged first).
func TestDB_ApplyStaged(t *testing.T) {
	sp := applySpec{events: 50, findings: 200, added: 150, removed: 50}
	fx := prepareApplyStore(t, filepath.Join(t.TempDir(), "device.db"), sp)
	ctx := context.Background()
	db, err := store.Open(ctx, fx.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// phase is 0 before the first apply, 1 from just before it until the
	// last merge returned, 2 after; a read is labelled with the phase it
	// began in.
	var phase atomic.Int32
	var stop atomic.Bool
	var mu sync.Mutex
	var failures []string
	reads := map[int32]int{}
	want := sp.findings + sp.added - sp.removed // the counter after the first download
	const rounds = 40
	final := want + rounds
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				p := phase.Load()
				recs, err := db.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: applyUnit, Kind: "finding", Limit: 10000})
				n, _, ierr := findingsInvariant(recs)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case ierr != nil:
					failures = append(failures, fmt.Sprintf("phase %d: %v", p, ierr))
				case p == 2 && n != final:
					failures = append(failures, fmt.Sprintf("read begun after the last merge: counter %d, want %d", n, final))
				}
				reads[p]++
				mu.Unlock()
			}
		}()
	}
	waitReads := func(p int32) {
		t.Helper()
		fstest.Eventually(t, 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return reads[p] >= 10
		}, "10 reads in phase %d", p)
	}
	waitReads(0)
	phase.Store(1)
	n, err := db.ApplyStaged(ctx, time.Now())
	if err != nil || n != fx.staged {
		t.Fatalf("apply: %d, %v; want %d", n, err, fx.staged)
	}
	slow, err := throttleWriter(fx.path)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := db.MergeApplied(ctx, 1)
	slow()
	if err != nil || merged != fx.staged {
		t.Fatalf("merge: %d, %v; want %d", merged, err, fx.staged)
	}
	mu.Lock()
	slowReads := reads[1]
	mu.Unlock()
	if s := liveState(t, db); !s.equal(fx.new) {
		t.Fatalf("after the merge: %s", s.diff(fx.new))
	}

	// Small downloads: the counter up by one and one new finding each.
	seq := fx.newSeq
	for r := 0; r < rounds; r++ {
		if _, _, err := db.BeginStaging(ctx, time.Hour, time.Now()); err != nil {
			t.Fatal(err)
		}
		var changes []projections.Change
		for _, c := range []struct {
			id string
			n  int
		}{{"counter", want + r + 1}, {fmt.Sprintf("g-%04d", r), 0}} {
			seq++
			body, _ := msgpack.Marshal(map[string]any{"n": c.n})
			changes = append(changes, projections.Change{Seq: seq, EventID: fmt.Sprintf("e%d", seq), Body: body,
				Addr: events.Address{OrgUnit: applyUnit, Channel: events.ChannelEvents, Kind: "finding", RecordID: c.id}})
		}
		if _, err := db.Apply(ctx, store.Batch{Unit: applyUnit, Channel: events.ChannelEvents, Stage: true,
			Batch: projections.Batch{Changes: changes, LastSeq: seq}}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.MarkStagingReady(ctx, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ApplyStaged(ctx, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := db.MergeApplied(ctx, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(r%4) * time.Millisecond) // varies the rounds' pacing against the readers: not synchronisation
	}
	phase.Store(2)
	waitReads(2)
	stop.Store(true)
	wg.Wait()

	t.Logf("reads: %d before, %d during the slow merge, %d during all the applies and merges, %d after",
		reads[0], slowReads, reads[1], reads[2])
	if len(failures) > 0 {
		t.Fatalf("%d of %d reads saw a broken view, first: %s", len(failures), reads[0]+reads[1]+reads[2], failures[0])
	}
	if slowReads < 10 {
		t.Fatalf("only %d reads during the slow merge; the test did not read while merging", slowReads)
	}
}
