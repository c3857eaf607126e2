package events_test

import (
	"errors"
	"testing"

	"github.com/fieldsync/fieldsync/events"
)

func TestAccessSubjects(t *testing.T) {
	for verb, build := range map[string]func(string) (string, error){
		"get": events.AccessRequestSubject, "grant": events.AccessGrantSubject, "signin": events.SignInSubject} {
		s, err := build("tab1")
		if err != nil || s != "fs.acc.tab1."+verb {
			t.Fatalf("%s subject %q (%v)", verb, s, err)
		}
		dev, v, err := events.ParseAccessSubject(s)
		if err != nil || dev != "tab1" || v != verb {
			t.Fatalf("parse %q: %q %q %v", s, dev, v, err)
		}
		if _, err := build("ta.b1"); !errors.Is(err, events.ErrBadSubject) {
			t.Fatalf("%s subject of a bad device id: %v", verb, err)
		}
	}
	for _, bad := range []string{"fs.acc.tab1", "fs.acc.tab1.get.x", "fs.up.tab1.get", "x.acc.tab1.get", "fs.acc.*.get"} {
		if _, _, err := events.ParseAccessSubject(bad); !errors.Is(err, events.ErrBadSubject) {
			t.Fatalf("ParseAccessSubject(%q): %v, want ErrBadSubject", bad, err)
		}
	}
	if _, err := events.ParseGrant([]byte(`{"device":"d","org_units":["no.rth"]}`)); err == nil {
		t.Fatal("a grant naming a bad org unit parsed")
	}
	if s, err := events.KindSubjects("", events.ChannelAdmin, "user"); err != nil || s != "fs.tenant.admin.user.*" {
		t.Fatalf("tenant kind subjects %q %v", s, err)
	}
	if s, err := events.KindSubjects("north", events.ChannelAdmin, "user_assignment"); err != nil || s != "fs.org.north.admin.user_assignment.*" {
		t.Fatalf("unit kind subjects %q %v", s, err)
	}
}
