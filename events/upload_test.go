package events_test

import (
	"errors"
	"testing"

	"github.com/fieldsync/fieldsync/events"
)

func TestUploadSubject(t *testing.T) {
	a := events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r1"}
	s, err := events.UploadSubject("tab-1", a)
	if err != nil || s != "fs.up.tab-1.north.events.event.r1" {
		t.Fatalf("UploadSubject = %q, %v", s, err)
	}
	dev, got, err := events.ParseUploadSubject(s)
	if err != nil || dev != "tab-1" || got != a {
		t.Fatalf("ParseUploadSubject = %q %+v %v", dev, got, err)
	}
	if _, err := events.UploadSubject("tab.1", a); !errors.Is(err, events.ErrBadSubject) {
		t.Fatalf("dotted device accepted: %v", err)
	}
	if _, err := events.UploadSubject("tab1", events.Address{Channel: events.ChannelAdmin, Kind: "setting", RecordID: "x"}); !errors.Is(err, events.ErrBadSubject) {
		t.Fatalf("tenant-wide upload accepted: %v", err)
	}
	for _, bad := range []string{"fs.up.tab1.north.events.event", "fs.up.t*b.north.events.event.r", "fs.org.north.events.event.r1",
		"fs.up.tab1.north.events.space*ship.r", "fs.up.tab1.north.events.event.r.x", "fs.up.t*b", "fs.up", "fs.up.tab1.north"} {
		if _, _, err := events.ParseUploadSubject(bad); !errors.Is(err, events.ErrBadSubject) {
			t.Errorf("ParseUploadSubject(%q) = %v, want ErrBadSubject", bad, err)
		}
	}
	if a.Key() != "north.events.event.r1" {
		t.Fatalf("Key = %q", a.Key())
	}
	if s, err := events.ResultSubject("tab1", "m1"); err != nil || s != "fs.res.tab1.m1" {
		t.Fatalf("ResultSubject = %q, %v", s, err)
	}
}

func TestDecodeResult(t *testing.T) {
	in := &events.Result{DeviceID: "tab1", MutationID: "m1", Status: events.Conflict, ServerVersion: 9, ServerDeleted: true, At: 5}
	b, err := events.EncodeResult(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := events.DecodeResult(b)
	if err != nil || out.Status != in.Status || out.ServerVersion != 9 || !out.ServerDeleted || out.MutationID != "m1" || out.At != 5 {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	if _, err := events.EncodeResult(&events.Result{DeviceID: "tab1", MutationID: "m1", Status: "maybe"}); !errors.Is(err, events.ErrInvalidField) {
		t.Fatalf("bad status accepted: %v", err)
	}
	for _, bad := range [][]byte{nil, {0xc1}, {0x81, 0xa2, 0x73, 0x74, 0xa1, 0x78}} {
		if _, err := events.DecodeResult(bad); err == nil {
			t.Errorf("DecodeResult(%x) accepted", bad)
		}
	}
}

func FuzzDecodeResult(f *testing.F) {
	b, _ := events.EncodeResult(&events.Result{DeviceID: "d", MutationID: "m", Status: events.Accepted, Version: 3})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		events.DecodeResult(b) // must not panic
	})
}

func TestMutationEventID(t *testing.T) {
	a, b := events.MutationEventID("tab", "1-x"), events.MutationEventID("tab-1", "x")
	if a == b {
		t.Fatalf("different (device, mutation) pairs share event id %q", a)
	}
	if err := events.ValidToken(a); err != nil {
		t.Fatalf("event id %q is not a token: %v", a, err)
	}
}

// TestStoredUploadSubject: FS_UPLOADS stores a device's uploads under
// fs.up.<device>, which parses back to the device with no address, and
// the stream's transform maps exactly the 7-token upload subjects there.
func TestStoredUploadSubject(t *testing.T) {
	s, err := events.StoredUploadSubject("tab-1")
	if err != nil || s != "fs.up.tab-1" {
		t.Fatalf("StoredUploadSubject = %q, %v", s, err)
	}
	dev, a, err := events.ParseUploadSubject(s)
	if err != nil || dev != "tab-1" || a != (events.Address{}) {
		t.Fatalf("ParseUploadSubject(%q) = %q %+v %v, want tab-1 and no address", s, dev, a, err)
	}
	if _, err := events.StoredUploadSubject("tab.1"); !errors.Is(err, events.ErrBadSubject) {
		t.Fatalf("dotted device accepted: %v", err)
	}
	src, dest := events.UploadSubjectTransform()
	if src != "fs.up.*.*.*.*.*" || dest != "fs.up.{{wildcard(1)}}" {
		t.Fatalf("transform %s -> %s", src, dest)
	}
}
