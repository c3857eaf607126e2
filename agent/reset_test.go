package agent

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

// resetWriter writes new records through the agent, as the tablet app
// does, and remembers every write the agent answered OK.
type resetWriter struct {
	a    *Agent
	mu   sync.Mutex
	ok   []string // mutation ids
	errs []error
}

func (w *resetWriter) write(ctx context.Context, id string) {
	m, err := w.a.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "action", RecordID: id, Body: map[string]any{"id": id}})
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errs = append(w.errs, fmt.Errorf("write %s: %w", id, err))
		return
	}
	w.ok = append(w.ok, m.MutationID)
}

// round writes in tight loops while Sync Now runs: a burst as it starts,
// one write exactly between its settling and its wipe (when now fires),
// and another burst while it settles again and reloads.
func (w *resetWriter) round(ctx context.Context, round int, now <-chan struct{}, done chan<- struct{}, end <-chan struct{}) {
	const burst = 2
	id := func(i int) string { return fmt.Sprintf("w%02d-%02d", round, i) }
	for i := 0; i < burst; i++ {
		w.write(ctx, id(i))
	}
	select {
	case <-now:
		w.write(ctx, id(burst))
		done <- struct{}{}
	case <-end:
		return
	}
	for i := burst + 1; i <= 2*burst; i++ {
		w.write(ctx, id(i))
	}
}

// Every local write the agent answered OK while Sync Now ran, whenever it
// came, ends up on the server or is still queued; device settings survive
// Sync Now.
func TestAgent_SyncNow_KeepsConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	startIngest(t, b, ingest.Rights{})
	cfg := testConfig("tab1", "north") // refresh mode off in the config...
	cfg.DataDir, cfg.BrokerURL = t.TempDir(), b.URL()
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	a := runAgent(t, cfg, nil)
	waitStatus(t, a, "the initial sync", syncedAfter(time.Time{}))
	if err := a.SetRefreshMode(ctx, true); err != nil { // ...switched on by the user
		t.Fatal(err)
	}
	autoBefore, err := a.DB().Meta(ctx, autoKey(ScopeFull))
	if err != nil || autoBefore == "" {
		t.Fatalf("the initial (automatic) sync left no schedule time: %q, %v", autoBefore, err)
	}
	s := a.currentSyncer()
	w := &resetWriter{a: a}
	const rounds = 50
	for round := 0; round < rounds; round++ {
		now, done, end := make(chan struct{}), make(chan struct{}), make(chan struct{})
		s.beforeWipe = func(attempt int) {
			if attempt == 1 {
				now <- struct{}{}
				<-done
			}
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.round(ctx, round, now, done, end)
		}()
		_, err := a.SyncNow(ctx)
		close(end)
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: sync now: %v", round, err)
		}
	}
	if len(w.errs) > 0 {
		t.Fatalf("%d writes failed: %v", len(w.errs), w.errs[0])
	}

	fstest.Eventually(t, 30*time.Second, func() bool {
		c, err := a.DB().OutboxCounts(ctx)
		return err == nil && c[store.StateQueued]+c[store.StateSent] == 0
	}, "autosync confirms the writes made during the last reload")
	onServer := map[string]bool{}
	for _, e := range b.DeviceChanges(t, "north") {
		onServer[e.Origin.MutationID] = true
	}
	queued, err := a.DB().Conflicts(ctx) // anything left in the outbox is a sync error now
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range queued {
		onServer[c.MutationID] = true
	}
	var lost []string
	for _, id := range w.ok {
		if !onServer[id] {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Fatalf("%d of %d writes answered OK are neither on the server nor queued: %v", len(lost), len(w.ok), lost[:min(5, len(lost))])
	}
	if v, err := a.DB().Meta(ctx, metaRefreshMode); err != nil || v != "on" {
		t.Fatalf("refresh-mode setting after sync now: %q, %v; want on", v, err)
	}
	if v, err := a.DB().Meta(ctx, autoKey(ScopeFull)); err != nil || v != autoBefore {
		t.Fatalf("last automatic sync after sync now: %q, %v; want %q (a manual sync does not move the schedule)", v, err, autoBefore)
	}
	t.Logf("%d rounds, %d writes answered OK, all kept", rounds, len(w.ok))
}
