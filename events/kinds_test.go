package events_test

import (
	"errors"
	"testing"

	"github.com/fieldsync/fieldsync/events"
)

func TestValidKind(t *testing.T) {
	for _, k := range []string{"event", "inspection_round", "K9", "document-rev"} {
		if err := events.ValidKind(k); err != nil {
			t.Errorf("ValidKind(%q) = %v", k, err)
		}
	}
	for k, want := range map[string]error{"": events.ErrMissingField, "a.b": events.ErrInvalidField, "*": events.ErrInvalidField,
		"_x": events.ErrInvalidField, "a b": events.ErrInvalidField} {
		if err := events.ValidKind(k); !errors.Is(err, want) {
			t.Errorf("ValidKind(%q) = %v, want %v", k, err, want)
		}
	}
	// A kind outside the catalogue, on any channel, makes a valid subject.
	a := events.Address{OrgUnit: "north", Channel: events.ChannelDocuments, Kind: "event", RecordID: "r1"}
	if s, err := a.Subject(); err != nil || s != "fs.org.north.documents.event.r1" {
		t.Fatalf("Subject = %q, %v", s, err)
	}
}

func TestKindSet_Accepts(t *testing.T) {
	var all events.KindSet
	if !all.Accepts(events.ChannelEvents, "anything") || all.Check(events.ChannelAdmin, "x") != nil {
		t.Fatal("a nil set must accept every kind")
	}
	s := events.KindSet{events.ChannelEvents: {"event", "action"}}
	for _, tc := range []struct {
		ch   events.Channel
		kind string
		want bool
	}{
		{events.ChannelEvents, "event", true},
		{events.ChannelEvents, "risk", false},
		{events.ChannelAdmin, "risk", true}, // a channel the set does not list accepts all
	} {
		if got := s.Accepts(tc.ch, tc.kind); got != tc.want {
			t.Errorf("Accepts(%s, %s) = %v, want %v", tc.ch, tc.kind, got, tc.want)
		}
		if err := s.Check(tc.ch, tc.kind); (err == nil) != tc.want || (err != nil && !errors.Is(err, events.ErrUnknownKind)) {
			t.Errorf("Check(%s, %s) = %v", tc.ch, tc.kind, err)
		}
	}
	def := events.DefaultKindSet()
	for _, ch := range events.Channels {
		for _, k := range events.Kinds(ch) {
			if !def.Accepts(ch, k) {
				t.Errorf("default set refuses %s/%s", ch, k)
			}
		}
		if def.Accepts(ch, "inspection_round") {
			t.Errorf("default set accepts a kind outside the catalogue on %s", ch)
		}
	}
	if err := def.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (events.KindSet{"gossip": {"x"}}).Validate(); err == nil {
		t.Fatal("unknown channel accepted")
	}
	if err := (events.KindSet{events.ChannelEvents: {"a.b"}}).Validate(); !errors.Is(err, events.ErrInvalidField) {
		t.Fatalf("bad kind: %v", err)
	}
}
