package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/events"
)

func TestParseSubject(t *testing.T) {
	good := map[string]events.Address{
		"fs.org.north.events.event.r1":         {OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r1"},
		"fs.org.N-2.documents.document.d_9":    {OrgUnit: "N-2", Channel: events.ChannelDocuments, Kind: "document", RecordID: "d_9"},
		"fs.tenant.admin.role_permission.p1":   {Channel: events.ChannelAdmin, Kind: "role_permission", RecordID: "p1"},
		"fs.org.south.admin.user_assignment.x": {OrgUnit: "south", Channel: events.ChannelAdmin, Kind: "user_assignment", RecordID: "x"},
		// Kinds are open: the channel is the subject's, whatever the kind.
		"fs.org.a.events.setting.r":           {OrgUnit: "a", Channel: events.ChannelEvents, Kind: "setting", RecordID: "r"},
		"fs.org.a.documents.drawing_rev2.r":   {OrgUnit: "a", Channel: events.ChannelDocuments, Kind: "drawing_rev2", RecordID: "r"},
		"fs.tenant.admin.holiday_calendar.cy": {Channel: events.ChannelAdmin, Kind: "holiday_calendar", RecordID: "cy"},
	}
	for s, want := range good {
		got, err := events.ParseSubject(s)
		if err != nil || got != want {
			t.Errorf("ParseSubject(%q) = %+v, %v; want %+v", s, got, err, want)
			continue
		}
		back, err := got.Subject()
		if err != nil || back != s {
			t.Errorf("Subject() of %q = %q, %v", s, back, err)
		}
	}
	bad := []string{"", "fs", "nats.org.a.events.event.r", "fs.org.a.events.event", "fs.org.a.events.event.r.extra",
		"fs.org.*.events.event.r", "fs.org.a.events.event.>", "fs.org.a.gossip.event.r", "fs.org.a.events.-x.r", "fs.org.a.events.a*.r",
		"fs.tenant.events.event.r", "fs.org..events.event.r", "fs.org.a b.events.event.r", "fs.org._x.events.event.r",
		"fs.org.a.events.event." + strings.Repeat("x", 129)}
	for _, s := range bad {
		if _, err := events.ParseSubject(s); !errors.Is(err, events.ErrBadSubject) {
			t.Errorf("ParseSubject(%q): got %v, want ErrBadSubject", s, err)
		}
	}
}

func TestValidToken(t *testing.T) {
	for _, s := range []string{"a", "A-1_b", "0", strings.Repeat("z", 128)} {
		if err := events.ValidToken(s); err != nil {
			t.Errorf("ValidToken(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "a.b", "*", ">", "a b", "-a", "_a", "a\x00", "é", strings.Repeat("z", 129)} {
		if err := events.ValidToken(s); err == nil {
			t.Errorf("ValidToken(%q) accepted", s)
		}
	}
}

func TestOrgStream(t *testing.T) {
	if s, err := events.OrgStream("north"); err != nil || s != "FS_ORG_north" {
		t.Fatalf("OrgStream = %q, %v", s, err)
	}
	if s, _ := events.OrgStream(""); s != events.TenantStream {
		t.Fatalf("tenant stream = %q", s)
	}
	if _, err := events.OrgStream("a.b"); err == nil {
		t.Fatal("dotted unit accepted")
	}
	if f, _ := events.ChannelFilter("north", events.ChannelAdmin); f != "fs.org.north.admin.>" {
		t.Fatalf("filter %q", f)
	}
	if _, err := events.ChannelFilter("", events.ChannelEvents); err == nil {
		t.Fatal("tenant events filter accepted")
	}
}

// FuzzParseSubject drives both subject parsers, the change subjects'
// [events.ParseSubject] and the uploads' [events.ParseUploadSubject]: an
// error wraps ErrBadSubject, and whatever parses builds the same subject
// again (so a parsed address never names another record or device).
func FuzzParseSubject(f *testing.F) {
	f.Add("fs.org.north.events.event.r1")
	f.Add("fs.tenant.admin.setting.s")
	f.Add("fs.org.a.b.c.d.e.f")
	f.Add("fs.up.tab1.north.events.event.r1")
	f.Add("fs.up.tab1..events.event.r1")
	f.Add("fs.up.tab*.north.events.event.>")
	f.Fuzz(func(t *testing.T, s string) {
		if a, err := events.ParseSubject(s); err != nil {
			if !errors.Is(err, events.ErrBadSubject) {
				t.Fatalf("ParseSubject(%q): %v does not wrap ErrBadSubject", s, err)
			}
		} else if back, err := a.Subject(); err != nil || back != s {
			t.Fatalf("parsed %q but Subject() = %q, %v", s, back, err)
		}
		dev, a, err := events.ParseUploadSubject(s)
		if err != nil {
			if !errors.Is(err, events.ErrBadSubject) {
				t.Fatalf("ParseUploadSubject(%q): %v does not wrap ErrBadSubject", s, err)
			}
			return
		}
		if a == (events.Address{}) { // the stored per-device form
			if back, err := events.StoredUploadSubject(dev); err != nil || back != s {
				t.Fatalf("parsed stored upload subject %q as %s but StoredUploadSubject = %q, %v", s, dev, back, err)
			}
			return
		}
		if back, err := events.UploadSubject(dev, a); err != nil || back != s {
			t.Fatalf("parsed upload %q as %s %+v but UploadSubject = %q, %v", s, dev, a, back, err)
		}
	})
}
