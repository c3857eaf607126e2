package natsjs_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

func TestPublisher_Publish_IncreasingVersions(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	p := b.Client.Publisher()
	var last uint64
	for i := 0; i < 5; i++ {
		e := fstest.Change(t, "north", ev, "event", fmt.Sprintf("e%d", i%2), map[string]any{"i": i})
		ack, err := p.Publish(ctx, e, natsjs.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ack.Version <= last || ack.Duplicate || ack.Stream != "FS_ORG_north" {
			t.Fatalf("publish %d: ack %+v after version %d", i, ack, last)
		}
		last = ack.Version
	}
	// The tenant stream numbers its own sequence.
	ack, err := p.Publish(ctx, fstest.Change(t, "", events.ChannelAdmin, "setting", "s1", map[string]any{"v": 1}), natsjs.PublishOptions{})
	if err != nil || ack.Stream != "FS_TENANT" || ack.Version != 1 {
		t.Fatalf("tenant publish: %+v (%v)", ack, err)
	}
	// The message landed on the envelope's subject and decodes back.
	s, err := mustJS(t, b).Stream(ctx, "FS_ORG_north")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "fs.org.north.events.event.e0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.Decode(m.Data)
	if err != nil || e.RecordID != "e0" || m.Sequence != last {
		t.Fatalf("stored message seq %d (want %d): %+v (%v)", m.Sequence, last, e, err)
	}
}

func TestPublisher_Publish_Duplicate(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	p := b.Client.Publisher()
	e := fstest.Change(t, "north", ev, "event", "e1", map[string]any{"v": 1})
	first, err := p.Publish(ctx, e, natsjs.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publishEvent(t, b, "north", "e2", 1) // something else in between
	again, err := p.Publish(ctx, e, natsjs.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Version != first.Version {
		t.Fatalf("republish of %s: %+v, want Duplicate with version %d", e.EventID, again, first.Version)
	}
	if st, _ := b.Client.UnitState(ctx, "north"); st.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2", st.Msgs)
	}
}

func TestPublisher_Publish_ExpectedVersion(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	p := b.Client.Publisher()
	change := func(rev int) *events.Envelope {
		return fstest.Change(t, "north", ev, "event", "e1", map[string]any{"rev": rev})
	}

	// 0 on a new record: ok.
	v1, err := p.Publish(ctx, change(1), natsjs.PublishOptions{ExpectedVersion: u64(0)})
	if err != nil {
		t.Fatalf("expected version 0 on a new record: %v", err)
	}
	publishEvent(t, b, "north", "other", 1) // moves the stream, not e1

	// Correct version: ok.
	v2, err := p.Publish(ctx, change(2), natsjs.PublishOptions{ExpectedVersion: u64(v1.Version)})
	if err != nil {
		t.Fatalf("expected version %d (current): %v", v1.Version, err)
	}

	// Stale version: conflict carrying the current one.
	_, err = p.Publish(ctx, change(3), natsjs.PublishOptions{ExpectedVersion: u64(v1.Version)})
	var ce *natsjs.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("stale expected version: %v, want *ConflictError", err)
	}
	if !errors.Is(err, natsjs.ErrVersionConflict) {
		t.Fatalf("%v does not wrap ErrVersionConflict", err)
	}
	if ce.Current != v2.Version || ce.Expected != v1.Version || ce.Subject != "fs.org.north.events.event.e1" {
		t.Fatalf("conflict %+v, want current %d expected %d", ce, v2.Version, v1.Version)
	}

	// 0 on an existing record: conflict.
	_, err = p.Publish(ctx, change(4), natsjs.PublishOptions{ExpectedVersion: u64(0)})
	if !errors.As(err, &ce) || ce.Current != v2.Version || ce.Expected != 0 {
		t.Fatalf("expected version 0 on an existing record: %v", err)
	}

	// Nothing of the refused changes landed.
	if v, err := p.Version(ctx, change(0).Address()); err != nil || v != v2.Version {
		t.Fatalf("version after conflicts = %d (%v), want %d", v, err, v2.Version)
	}
}

func TestPublisher_Publish_UnknownUnit(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	p := b.Client.Publisher()
	_, err := p.Publish(ctx, fstest.Change(t, "nowhere", ev, "event", "e1", map[string]any{"v": 1}), natsjs.PublishOptions{})
	if !errors.Is(err, natsjs.ErrUnknownUnit) {
		t.Fatalf("publish to a unit without stream: %v, want ErrUnknownUnit", err)
	}
	if _, err := p.Version(ctx, events.Address{OrgUnit: "nowhere", Channel: ev, Kind: "event", RecordID: "e1"}); !errors.Is(err, natsjs.ErrUnknownUnit) {
		t.Fatalf("version in a unit without stream: %v, want ErrUnknownUnit", err)
	}
}

func TestPublisher_Publish_RejectsInvalidEnvelope(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	e := fstest.Change(t, "north", ev, "event", "e1", map[string]any{"v": 1})
	e.Kind = "space ship"
	if _, err := b.Client.Publisher().Publish(ctx, e, natsjs.PublishOptions{}); !errors.Is(err, events.ErrInvalidField) {
		t.Fatalf("invalid envelope: %v, want ErrInvalidField", err)
	}
	if st, _ := b.Client.UnitState(ctx, "north"); st.Msgs != 0 {
		t.Fatalf("invalid envelope reached the stream (%d msgs)", st.Msgs)
	}
}

func TestPublisher_Version(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	p := b.Client.Publisher()
	a := events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "e1"}
	if v, err := p.Version(ctx, a); err != nil || v != 0 {
		t.Fatalf("version of an absent record = %d, %v; want 0, nil", v, err)
	}
	publishEvent(t, b, "north", "e1", 1)
	publishEvent(t, b, "north", "e2", 1)
	v3 := publishEvent(t, b, "north", "e1", 2)
	if v, err := p.Version(ctx, a); err != nil || v != v3 {
		t.Fatalf("version = %d, %v; want %d", v, err, v3)
	}
	// A delete is a version too.
	vd := b.MustPublish(t, fstest.Change(t, "north", ev, "event", "e1", nil))
	if v, _ := p.Version(ctx, a); v != vd {
		t.Fatalf("version after delete = %d, want %d", v, vd)
	}
	if _, err := p.Version(ctx, events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "a.b"}); err == nil {
		t.Fatal("version of an invalid address succeeded")
	}
}

func TestPublisher_PublishAll(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	const n = 250
	envs := make([]*events.Envelope, n)
	for i := range envs {
		envs[i] = fstest.Change(t, "north", events.ChannelDocuments, "document", fmt.Sprintf("d%03d", i), map[string]any{"i": i})
	}
	i := 0
	next := func() (*events.Envelope, bool) {
		if i == len(envs) {
			return nil, false
		}
		i++
		return envs[i-1], true
	}
	got, err := b.Client.Publisher().PublishAll(ctx, next, 32) // window smaller than n: several waits
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("PublishAll returned %d, want %d", got, n)
	}
	st, err := b.Client.UnitState(ctx, "north")
	if err != nil || st.Msgs != n || st.Subjects != n {
		t.Fatalf("stream state %+v (%v), want %d messages on %d subjects", st, err, n, n)
	}
	// Event ids are dedupe ids here too.
	i = 0
	if got, err := b.Client.Publisher().PublishAll(ctx, next, 0); err != nil || got != n {
		t.Fatalf("republish: %d, %v", got, err)
	}
	if st, _ := b.Client.UnitState(ctx, "north"); st.Msgs != n {
		t.Fatalf("republishing the same events added messages: %d", st.Msgs)
	}
	// An invalid envelope stops it with the count so far.
	bad := fstest.Change(t, "north", ev, "event", "x", map[string]any{"v": 1})
	bad.RecordID = "a.b"
	envs = []*events.Envelope{fstest.Change(t, "north", ev, "event", "ok", map[string]any{"v": 1}), bad}
	i = 0
	if got, err := b.Client.Publisher().PublishAll(ctx, next, 0); !errors.Is(err, events.ErrInvalidField) || got > 1 {
		t.Fatalf("PublishAll with an invalid envelope: %d, %v; want ErrInvalidField", got, err)
	}
}
