package natsjs_test

import (
	"errors"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

func TestPublisher_FindMutation(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	p := b.Client.Publisher()
	addr := events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "r1"}
	publishEvent(t, b, "north", "r1", 1)
	dev := fstest.Change(t, "north", ev, "event", "r1", map[string]any{"rev": 2})
	dev.Origin = events.Origin{DeviceID: "tab1", MutationID: "m1", BaseVersion: 1}
	want := b.MustPublish(t, dev)
	publishEvent(t, b, "north", "r1", 3)

	if v, err := p.FindMutation(testCtx(t), addr, "tab1", "m1"); err != nil || v != want {
		t.Fatalf("FindMutation(m1) = %d, %v, want %d", v, err, want)
	}
	if v, err := p.FindMutation(testCtx(t), addr, "tab1", "m2"); err != nil || v != 0 {
		t.Fatalf("FindMutation(m2) = %d, %v, want 0", v, err)
	}
	empty := addr
	empty.RecordID = "never-written"
	if v, err := p.FindMutation(testCtx(t), empty, "tab1", "m1"); err != nil || v != 0 {
		t.Fatalf("FindMutation on a record without history = %d, %v, want 0", v, err)
	}
	south := addr
	south.OrgUnit = "south"
	if v, err := p.FindMutation(testCtx(t), south, "tab1", "m1"); !errors.Is(err, natsjs.ErrUnknownUnit) || v != 0 {
		t.Fatalf("FindMutation on a unit without stream = %d, %v, want ErrUnknownUnit", v, err)
	}
}
