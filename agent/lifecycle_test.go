package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

// pausedDownload returns a refresh-mode device whose staged download of
// 2,000 changes stopped after three batches, and the broker.
func pausedDownload(t *testing.T) (*fstest.Broker, *store.DB, Config, uint64) {
	t.Helper()
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "first", map[string]any{"x": 0}))
	db := mustOpenDB(t)
	cfg := refreshConfig("tab1", "north")
	cfg.BatchSize = 100
	if _, err := NewSyncer(cfg, deviceClient(t, b, cfg), db, nil).Sync(ctx, ScopeEvents); err != nil {
		t.Fatal(err)
	}
	seedUnit(t, b, "north", 2000, nil)
	cctx, cancel := context.WithCancel(ctx)
	s := NewSyncer(cfg, deviceClient(t, b, cfg), db, nil)
	batches := 0
	s.onBatch = func(string, events.Channel, int) {
		if batches++; batches == 3 {
			cancel() // the agent stops mid-download
		}
	}
	if _, err := s.Sync(cctx, ScopeEvents); !errors.Is(err, context.Canceled) {
		t.Fatalf("paused sync: %v", err)
	}
	cp, err := db.StagingCheckpoint(ctx, "north", events.ChannelEvents)
	if err != nil || cp.LastSeq < 2 {
		t.Fatalf("staged position after the pause: %+v %v", cp, err)
	}
	return b, db, cfg, cp.LastSeq
}

func TestSyncer_Sync_ResumesWithinWindow(t *testing.T) {
	b, db, cfg, pausedAt := pausedDownload(t)
	last := uint64(2001) // 1 + 2000 messages in the stream
	cfg.Clock = func() time.Time { return time.Now().Add(11 * time.Hour) }
	rep, err := NewSyncer(cfg, deviceClient(t, b, cfg), db, nil).Sync(context.Background(), ScopeEvents)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Resumed || rep.Discarded {
		t.Fatalf("restart within the window: %+v, want resumed", rep)
	}
	if got := received(rep); got != last-pausedAt {
		t.Fatalf("resumed download fetched %d messages, want only the %d after the pause point %d", got, last-pausedAt, pausedAt)
	}
	if _, err := db.ApplyStaged(context.Background(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if got, want := liveServerView(t, db), freshView(t, b, "north"); !sameModel(got, want) {
		t.Fatalf("after apply %d records, server %d", len(got), len(want))
	}
}

func TestSyncer_Sync_RestartsAfterWindow(t *testing.T) {
	b, db, cfg, _ := pausedDownload(t)
	cfg.Clock = func() time.Time { return time.Now().Add(13 * time.Hour) }
	rep, err := NewSyncer(cfg, deviceClient(t, b, cfg), db, nil).Sync(context.Background(), ScopeEvents)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Discarded || rep.Resumed {
		t.Fatalf("restart after the window: %+v, want the staging discarded", rep)
	}
	if got := received(rep); got != 2000 {
		t.Fatalf("restarted download fetched %d messages, want all 2000 since the last applied checkpoint", got)
	}
	if _, err := db.ApplyStaged(context.Background(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if got, want := liveServerView(t, db), freshView(t, b, "north"); !sameModel(got, want) {
		t.Fatalf("after apply %d records, server %d", len(got), len(want))
	}
}

func TestAgeBand(t *testing.T) {
	since := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		after time.Duration
		want  string
	}{{0, "green"}, {23*time.Hour + 59*time.Minute, "green"}, {24 * time.Hour, "orange"}, {47 * time.Hour, "orange"},
		{48 * time.Hour, "orange"}, {48*time.Hour + time.Second, "red"}, {10 * 24 * time.Hour, "red"}} {
		if got := AgeBand(since, since.Add(c.after)); got != c.want {
			t.Errorf("after %s: %s, want %s", c.after, got, c.want)
		}
	}
}

func TestAgent_Status_UpdatesAvailableAgeBand(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	now := time.Now()
	cfg := refreshConfig("tab1", "north")
	cfg.DataDir, cfg.Clock = t.TempDir(), func() time.Time { return now }
	a, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	s := NewSyncer(a.Config(), deviceClient(t, b, a.Config()), a.DB(), nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	a.completed = time.Now()
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 2}))
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		later time.Duration
		band  string
	}{{time.Hour, "green"}, {30 * time.Hour, "orange"}, {50 * time.Hour, "red"}} {
		now = time.Now().Add(c.later)
		st, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != StateUpdatesAvailable || st.AgeBand != c.band || st.StagedChanges != 1 || st.UpdatesAvailableSince == nil {
			t.Fatalf("%s later: state %s band %s staged %d; want updates_available %s", c.later, st.State, st.AgeBand, st.StagedChanges, c.band)
		}
	}
	if _, err := a.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := a.Status(ctx)
	if st.State != StateUpToDate || st.LastApplied == nil || st.AgeBand != "" {
		t.Fatalf("after apply: %+v", st)
	}
}

func TestSyncer_Reset_UploadsPendingWritesFirst(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	startIngest(t, b, ingest.Rights{})
	for i := 0; i < 10; i++ {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%d", i), map[string]any{"i": i}))
	}
	db := mustOpenDB(t)
	s := NewSyncer(refreshConfig("tab1", "north"), deviceClient(t, b, refreshConfig("tab1", "north")), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		mustWrite(t, s, "north", "action", fmt.Sprintf("offline%d", i), map[string]any{"i": i})
	}
	if _, err := s.Reset(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := len(b.DeviceChanges(t, "north")); n != 3 {
		t.Fatalf("server holds %d of the 3 pending writes", n)
	}
	requireSameState(t, db, freshView(t, b, "north"))
	if c, _ := db.OutboxCounts(ctx); c[store.StateQueued]+c[store.StateSent] != 0 {
		t.Fatalf("outbox after sync now: %v", c)
	}
}

func TestSyncer_Reset_RefusesWhenServerUnreachable(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	db := mustOpenDB(t)
	s := NewSyncer(refreshConfig("tab1", "north"), deviceClient(t, b, refreshConfig("tab1", "north")), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, "north", "action", "unsent", map[string]any{"x": 1})
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.Server.Close(sctx); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	_, err := s.Reset(rctx, time.Second)
	if !errors.Is(err, ErrResetRefused) {
		t.Fatalf("sync now with the broker down: %v, want ErrResetRefused", err)
	}
	if n, _ := db.Count(ctx, store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit}); n != 2 { // e1 + the pending write
		t.Fatalf("a refused sync now must clear nothing; events count %d", n)
	}
	if c, _ := db.OutboxCounts(ctx); c[store.StateQueued] != 1 {
		t.Fatalf("the pending write must stay queued: %v", c)
	}
}
