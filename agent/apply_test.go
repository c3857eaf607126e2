package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// groupIDs are records the server always changes together, in one round:
// a view showing two rounds among them shows a state the server never had.
var groupIDs = []string{"g0", "g1", "g2", "g3"}

func publishGroup(t *testing.T, b *fstest.Broker, round int) {
	t.Helper()
	for _, id := range groupIDs {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"round": round}))
	}
}

// waitDurablePending waits until device's events durable of unit north
// counts at least n changes pending. The broker updates that count a
// moment after a publish is acknowledged, and a cursor opened before then
// stops early; this test is about Apply, not that gap.
func waitDurablePending(t *testing.T, b *fstest.Broker, device string, n int) {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.New(b.Client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := events.OrgStream("north")
	durable, err := natsjs.DurableName(device, events.ChannelEvents)
	if err != nil {
		t.Fatal(err)
	}
	// A pull the previous sync left waiting on the server takes new
	// messages at once: they count as delivered, not pending.
	fstest.Eventually(t, 10*time.Second, func() bool {
		c, err := js.Consumer(ctx, stream, durable)
		return err == nil && c.CachedInfo().NumPending+uint64(c.CachedInfo().NumAckPending) >= uint64(n)
	}, "durable %s counts %d pending or delivered", durable, n)
}

// groupRound returns the round the live view shows for the group, or an
// error when its records are not all of one round.
func groupRound(ctx context.Context, db *store.DB) (string, error) {
	recs, err := db.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", Kind: "event"})
	if err != nil {
		return "", err
	}
	if len(recs) != len(groupIDs) {
		return "", fmt.Errorf("live view holds %d group records, want %d", len(recs), len(groupIDs))
	}
	round := fmt.Sprint(recs[0].Body["round"])
	for _, r := range recs[1:] {
		if got := fmt.Sprint(r.Body["round"]); got != round {
			return "", fmt.Errorf("live view mixes rounds: %s at round %s, %s at round %s", recs[0].RecordID, round, r.RecordID, got)
		}
	}
	return round, nil
}

// applyRace is the state of TestSyncer_Sync_ApplyRacingStagedDownload:
// Apply holds mu, the reader checks the view under it.
type applyRace struct {
	db        *store.DB
	merge     chan struct{} // an Apply happened: merge
	read      chan struct{} // something was committed: check the view
	mu        sync.RWMutex
	applied   int // the round the live view must show
	completed int // the round of the last completed download
	reads     atomic.Int64
	errs      chan error
}

func (r *applyRace) poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (r *applyRace) fail(err error) {
	select {
	case r.errs <- err:
	default:
	}
}

// apply applies what is staged; the view must then show exactly the last
// completed download.
func (r *applyRace) apply(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.db.ApplyStaged(ctx, time.Now())
	switch {
	case errors.Is(err, store.ErrNothingToApply) && r.applied == r.completed:
		return
	case err != nil:
		r.fail(fmt.Errorf("apply with round %d completed, %d applied: %w", r.completed, r.applied, err))
		return
	}
	r.applied = r.completed
	if got, err := groupRound(ctx, r.db); err != nil || got != fmt.Sprint(r.applied) {
		r.fail(fmt.Errorf("just after Apply of round %d the view shows round %q (%v)", r.applied, got, err))
	}
	r.poke(r.merge)
}

// run reads the view after each commit until stop, while the download
// and the merge go on, and merges applied changes in small chunks after
// each Apply (as the agent's merger does).
func (r *applyRace) run(ctx context.Context, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-r.read:
			}
			r.mu.RLock()
			got, err := groupRound(ctx, r.db)
			want := fmt.Sprint(r.applied)
			r.mu.RUnlock()
			r.reads.Add(1)
			if err == nil && got != want {
				err = fmt.Errorf("the view shows round %s between Applies; round %s was applied last", got, want)
			}
			if err != nil {
				r.fail(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-r.merge:
			}
			r.poke(r.read)
			if _, err := r.db.MergeApplied(ctx, 3); err != nil {
				r.fail(err)
				return
			}
			r.poke(r.read)
		}
	}()
}

// An Apply while a staged download runs makes live exactly the last
// completed download; the running one stays staged and waits for its own
// Apply. The server changes a group of records together in each round;
// the device's view must always show one whole round, and change only at
// an Apply.
func TestSyncer_Sync_ApplyRacingStagedDownload(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	publishGroup(t, b, 0)
	db := mustOpenDB(t)
	cfg := refreshConfig("tab1", "north")
	cfg.BatchSize = 1 // one record per batch: an Apply can fall between any two
	s := NewSyncer(cfg, deviceClient(t, b, cfg), db, nil)
	if _, err := s.Sync(ctx, ScopeEvents); err != nil { // the initial load goes live
		t.Fatal(err)
	}
	r := &applyRace{db: db, merge: make(chan struct{}, 1), read: make(chan struct{}, 1), errs: make(chan error, 1)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	r.run(ctx, stop, &wg)
	defer func() { close(stop); wg.Wait() }()

	const trials = 100
	applies := 0
	for trial := 1; trial <= trials; trial++ {
		publishGroup(t, b, trial)
		waitDurablePending(t, b, "tab1", len(groupIDs))
		// 1-4: Apply after that batch of the download; 0: after the
		// download; 5: not at all, so two completed downloads wait.
		at, batches := trial%6, 0
		s.onBatch = func(string, events.Channel, int) {
			r.poke(r.read)
			if batches++; batches == at && at < 5 {
				r.apply(ctx)
			}
		}
		rep, err := s.Sync(ctx, ScopeEvents)
		select {
		case err := <-r.errs:
			t.Fatalf("trial %d (Apply at batch %d): %v", trial, at, err)
		default:
		}
		if err != nil || !rep.UpdatesAvailable {
			t.Fatalf("trial %d: sync %+v, %v; want updates available", trial, rep, err)
		}
		r.mu.Lock()
		r.completed = trial
		r.mu.Unlock()
		if at == 0 {
			r.apply(ctx)
		}
		if at < 5 {
			applies++
		}
	}
	r.apply(ctx)
	select {
	case err := <-r.errs:
		t.Fatal(err)
	default:
	}
	if got, err := groupRound(ctx, db); err != nil || got != fmt.Sprint(trials) {
		t.Fatalf("after the last Apply the view shows round %q (%v), want %d", got, err, trials)
	}
	if r.reads.Load() == 0 {
		t.Fatal("the reader never read the view")
	}
	t.Logf("%d trials, %d Applies during or after a download, %d concurrent reads", trials, applies, r.reads.Load())
}

// A write made after Apply, before the background merge folded the
// applied changes into the channel table, is based on the version the
// view shows: ingest accepts it.
func TestSyncer_Write_AfterApplyBeforeMerge(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"v": 1}))
	startIngest(t, b, ingest.Rights{})
	db := mustOpenDB(t)
	s := NewSyncer(refreshConfig("tab1", "north"), deviceClient(t, b, refreshConfig("tab1", "north")), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	v2 := b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"v": 2}))
	if rep, err := s.Sync(ctx, ScopeFull); err != nil || !rep.UpdatesAvailable {
		t.Fatalf("sync %+v, %v; want updates available", rep, err)
	}
	if _, err := db.ApplyStaged(ctx, time.Now()); err != nil { // no merger runs here
		t.Fatal(err)
	}
	m := mustWrite(t, s, "north", "event", "e1", map[string]any{"mine": true})
	if m.BaseVersion != v2 {
		t.Errorf("write based on version %d, want %d (the applied update)", m.BaseVersion, v2)
	}
	settle(t, s)
	if cs, err := db.Conflicts(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("sync errors %+v, %v; want the write accepted", cs, err)
	}
	recs, err := db.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", RecordID: "e1", Kind: "event"})
	if err != nil || len(recs) != 1 || recs[0].Pending || recs[0].Body["mine"] != true || recs[0].Version <= v2 {
		t.Fatalf("e1 after the write: %+v, %v; want the accepted write above version %d", recs, err, v2)
	}
}
