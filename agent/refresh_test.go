package agent

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/seed"
	"github.com/fieldsync/fieldsync/store"
)

// liveServerView returns the live view minus the device's pending writes.
func liveServerView(t *testing.T, db *store.DB) serverModel {
	t.Helper()
	m := serverModel{}
	for _, ch := range events.Channels {
		for off := 0; ; off += 10000 {
			recs, err := db.Records(context.Background(), store.Query{Channel: ch, Unit: store.AnyUnit, Limit: 10000, Offset: off})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if !r.Pending {
					m[events.Address{OrgUnit: r.OrgUnit, Channel: ch, Kind: r.Kind, RecordID: r.RecordID}] = modelRecord{version: r.Version, body: r.RawBody}
				}
			}
			if len(recs) < 10000 {
				break
			}
		}
	}
	return m
}

func sameModel(a, b serverModel) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w.version != v.version || string(w.body) != string(v.body) {
			return false
		}
	}
	return true
}

// seedUnit publishes n synthetic events to unit and records them in model.
func seedUnit(t *testing.T, b *fstest.Broker, unit string, n int, model serverModel) {
	t.Helper()
	gen, err := seed.New(seed.Spec{Org: unit, Events: n, BodySize: 120, Seed: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	var all []*events.Envelope
	for e, ok := gen.Next(); ok; e, ok = gen.Next() {
		e.EventID = fmt.Sprintf("%s-%d", e.EventID, time.Now().UnixNano())
		all = append(all, e)
	}
	i := 0
	if _, err := b.Client.Publisher().PublishAll(context.Background(), func() (*events.Envelope, bool) {
		if i == len(all) {
			return nil, false
		}
		i++
		return all[i-1], true
	}, 4000); err != nil {
		t.Fatal(err)
	}
	if model != nil {
		for _, e := range all {
			v, err := b.Client.Publisher().Version(context.Background(), e.Address())
			if err != nil {
				t.Fatal(err)
			}
			model[e.Address()] = modelRecord{version: v, body: e.Body}
		}
	}
}

func TestSyncer_Sync_RefreshModeStagesUntilApply(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	model := serverModel{}
	for i := 0; i < 20; i++ {
		model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%02d", i), map[string]any{"v": 1}))
	}
	db := mustOpenDB(t)
	s := NewSyncer(refreshConfig("tab1", "north"), deviceClient(t, b, refreshConfig("tab1", "north")), db, nil)
	if rep, err := s.Sync(ctx, ScopeFull); err != nil || rep.UpdatesAvailable {
		t.Fatalf("initial sync: %+v %v (the first load goes live at once)", rep, err)
	}
	requireSameState(t, db, model)
	before := liveServerView(t, db)

	for i := 0; i < 5; i++ { // updates, an insert, deletes
		model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%02d", i), map[string]any{"v": 2}))
	}
	model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", "new", map[string]any{"v": 1}))
	model.publish(t, b, fstest.Change(t, "north", events.ChannelEvents, "event", "e19", nil))
	rep, err := s.Sync(ctx, ScopeFull)
	if err != nil || !rep.UpdatesAvailable || !rep.Staged {
		t.Fatalf("delta sync in refresh mode: %+v %v, want updates available", rep, err)
	}
	if !sameModel(before, liveServerView(t, db)) {
		t.Fatal("the live view changed before Apply")
	}
	mustWrite(t, s, "north", "event", "e01", map[string]any{"mine": true}) // writes go on during staging
	if _, err := db.ApplyStaged(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	delete(model, events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "e01"}) // pending on top
	if got := liveServerView(t, db); !sameModel(got, model) {
		t.Fatalf("after Apply the live view (%d records) is not the server's (%d)", len(got), len(model))
	}
	if n, err := db.MergeApplied(ctx, 2); err != nil || n != 7 {
		t.Fatalf("merged %d, %v; want the 7 applied changes", n, err)
	}
	if got := liveServerView(t, db); !sameModel(got, model) {
		t.Fatal("merging changed the live view")
	}
	if _, err := db.ApplyStaged(ctx, time.Now()); err != store.ErrNothingToApply {
		t.Fatalf("second apply: %v, want ErrNothingToApply", err)
	}
}

func TestSyncer_Sync_LiveViewServesDuringLargeStagedDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000-change download; skipped with -short")
	}
	// The race detector slows SQLite tens of times: make test (always
	// -race) stages 20,000 changes, make test-large the full 100,000.
	changes := 100_000
	if fstest.RaceEnabled {
		changes = 20_000
	}
	t.Logf("staged download of %d changes", changes)
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	seedUnit(t, b, "north", 1000, nil)
	db := mustOpenDB(t)
	cfg := refreshConfig("tab1", "north")
	cfg.BatchSize = 5000
	s := NewSyncer(cfg, deviceClient(t, b, cfg), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	before := liveServerView(t, db)
	seedUnit(t, b, "north", changes, nil)

	var stop atomic.Bool
	var reads, writes atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() { // a reader: the live view stays exactly as it was
		defer wg.Done()
		for !stop.Load() {
			w0 := int(writes.Load())
			n, err := db.Count(ctx, store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit})
			w1 := int(writes.Load())
			if err == nil && (n < len(before)+w0 || n > len(before)+w1+1) {
				err = fmt.Errorf("live view has %d records during the download, want %d (+ %d..%d local writes)", n, len(before), w0, w1+1)
			}
			if err != nil {
				errs <- err
				return
			}
			reads.Add(1)
		}
	}()
	go func() { // the user keeps writing
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			if _, err := s.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "action", RecordID: fmt.Sprintf("w%d", i), Body: map[string]any{"i": i}}); err != nil {
				errs <- err
				return
			}
			writes.Add(1)
			time.Sleep(5 * time.Millisecond) // paces the user's writes during the download: not synchronisation
		}
	}()
	rep, err := s.Sync(ctx, ScopeEvents)
	stop.Store(true)
	wg.Wait()
	close(errs)
	if err != nil {
		t.Fatal(err)
	}
	for err := range errs {
		t.Fatal(err)
	}
	if reads.Load() == 0 || writes.Load() == 0 || !rep.UpdatesAvailable {
		t.Fatalf("reads %d, writes %d, report %+v", reads.Load(), writes.Load(), rep)
	}
	if !sameModel(before, liveServerView(t, db)) {
		t.Fatal("server data in the live view changed before Apply")
	}
	if _, err := db.ApplyStaged(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	model := freshView(t, b, "north")
	if got := liveServerView(t, db); !sameModel(got, model) {
		t.Fatalf("after Apply: %d records, server %d", len(got), len(model))
	}
}

func TestSyncer_Sync_OwnAcceptedWriteIsNoUpdate(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	startIngest(t, b, ingest.Rights{})
	db := mustOpenDB(t)
	s := NewSyncer(refreshConfig("tab1", "north"), deviceClient(t, b, refreshConfig("tab1", "north")), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, "north", "action", "mine", map[string]any{"y": 1})
	settle(t, s) // accepted: already live on the device
	rep, err := s.Sync(ctx, ScopeFull)
	if err != nil {
		t.Fatal(err)
	}
	if rep.UpdatesAvailable {
		t.Fatalf("the device's own accepted write came back as an update to apply: %+v", rep)
	}
	if st, _ := db.StagingState(ctx); st.Changes != 0 || st.Ready != nil {
		t.Fatalf("staging %+v, want empty", st)
	}
}
