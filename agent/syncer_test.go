package agent

import (
	"context"
	"math/rand"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

func TestSyncer_Sync_InitialThenDelta(t *testing.T) {
	ctx := context.Background()
	units := []string{"north", "south"}
	b := fstest.MustStartBroker(t, units...)
	model := serverModel{}
	rng := rand.New(rand.NewSource(1))
	model.populate(t, b, units, 60, rng)

	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", units...), deviceClient(t, b, testConfig("tab1", units...)), db, nil)
	rep, err := s.Sync(ctx, ScopeFull)
	if err != nil {
		t.Fatal(err)
	}
	requireSameState(t, db, model)
	if rep.Applied == 0 || rep.Rejected != 0 {
		t.Fatalf("report %+v", rep)
	}

	// Delta: more changes of every sort, then a second sync.
	model.populate(t, b, units, 70, rng)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	requireSameState(t, db, model)
	for _, cp := range mustCheckpoints(t, s) {
		if !cp.SnapshotDone {
			t.Errorf("checkpoint %s/%s not marked snapshot done", cp.Unit, cp.Channel)
		}
	}
}

func TestSyncer_Sync_ScopedTouchesOnlyItsChannel(t *testing.T) {
	ctx := context.Background()
	units := []string{"north", "south"}
	b := fstest.MustStartBroker(t, units...)
	model := serverModel{}
	model.populate(t, b, units, 10, rand.New(rand.NewSource(2)))
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("tab1", units...), deviceClient(t, b, testConfig("tab1", units...)), db, nil)
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	before := map[string]uint64{}
	for _, cp := range mustCheckpoints(t, s) {
		before[cp.Unit+"/"+string(cp.Channel)] = cp.LastSeq
	}
	for _, u := range units {
		for _, ch := range events.Channels {
			model.publish(t, b, fstest.Change(t, u, ch, events.Kinds(ch)[0], "late", map[string]any{"x": 1}))
		}
	}
	if _, err := s.Sync(ctx, ScopeEvents); err != nil {
		t.Fatal(err)
	}
	for _, cp := range mustCheckpoints(t, s) {
		moved := cp.LastSeq != before[cp.Unit+"/"+string(cp.Channel)]
		if moved != (cp.Channel == events.ChannelEvents) {
			t.Errorf("scoped events sync: checkpoint %s/%s moved=%v", cp.Unit, cp.Channel, moved)
		}
	}
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	requireSameState(t, db, model)
}
