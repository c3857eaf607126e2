package ingest

import (
	"testing"

	"github.com/fieldsync/fieldsync/events"
)

func TestRights_Allowed(t *testing.T) {
	t.Parallel()
	ev := func(unit, kind string) events.Address {
		return events.Address{OrgUnit: unit, Channel: events.ChannelEvents, Kind: kind, RecordID: "r1"}
	}
	admin := events.Address{OrgUnit: "north", Channel: events.ChannelAdmin, Kind: "setting", RecordID: "r1"}
	doc := events.Address{OrgUnit: "north", Channel: events.ChannelDocuments, Kind: "document", RecordID: "r1"}
	units := map[string][]string{"tab1": {"north"}, "tab2": {"north", "south"}}
	cases := []struct {
		name   string
		rights Rights
		device string
		addr   events.Address
		ok     bool
	}{
		{"default: event", Rights{}, "any", ev("north", "event"), true},
		{"default: every events kind", Rights{}, "any", ev("south", "risk"), true},
		{"default: admin setting", Rights{}, "any", admin, false},
		{"default: document", Rights{}, "any", doc, false},
		{"listed device, its unit", Rights{Devices: units}, "tab1", ev("north", "finding"), true},
		{"listed device, other unit", Rights{Devices: units}, "tab1", ev("south", "finding"), false},
		{"listed device, second unit", Rights{Devices: units}, "tab2", ev("south", "event"), true},
		{"unlisted device", Rights{Devices: units}, "tab3", ev("north", "event"), false},
		{"listed device, admin kind", Rights{Devices: units}, "tab1", admin, false},
		{"writable admin setting", Rights{Writable: map[events.Channel][]string{events.ChannelAdmin: {"setting"}}}, "any", admin, true},
		{"writable without events", Rights{Writable: map[events.Channel][]string{events.ChannelAdmin: {"setting"}}}, "any", ev("north", "event"), false},
		{"writable subset of events", Rights{Writable: map[events.Channel][]string{events.ChannelEvents: {"action"}}}, "any", ev("north", "event"), false},
		{"writable subset, listed kind", Rights{Writable: map[events.Channel][]string{events.ChannelEvents: {"action"}}}, "any", ev("north", "action"), true},
	}
	for _, c := range cases {
		err := c.rights.Allowed(c.device, c.addr)
		if (err == nil) != c.ok {
			t.Errorf("%s: Allowed(%s, %+v) = %v, want allowed %v", c.name, c.device, c.addr, err, c.ok)
		}
	}
}

func TestIngester_Run_RejectsKindsDevicesMayNotWrite(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	results := h.watchResults("tab1")
	h.start(Options{})

	setting := mutation(t, "tab1", "m1", "north", "s1", 0, "", map[string]any{"k": "v"})
	setting.Channel, setting.Kind = events.ChannelAdmin, "setting"
	doc := mutation(t, "tab1", "m2", "north", "d1", 0, "", map[string]any{"title": "manual"})
	doc.Channel, doc.Kind = events.ChannelDocuments, "document"
	h.upload(setting)
	h.upload(doc)
	rs := results.wait(t, "m1", "m2")
	wantResult(t, rs["m1"], "tab1", "m1", events.Rejected, events.ReasonNotAllowed)
	wantResult(t, rs["m2"], "tab1", "m2", events.Rejected, events.ReasonNotAllowed)

	h.upload(mutation(t, "tab1", "m3", "north", "e1", 0, "", map[string]any{"title": "ok"}))
	wantResult(t, results.wait(t, "m3")["m3"], "tab1", "m3", events.Accepted, "")

	dev := fromDevices(h.orgChanges("north"))
	if len(dev) != 1 || dev[0].Env.Origin.MutationID != "m3" {
		t.Errorf("device changes in the org stream = %+v, want only m3", dev)
	}
	if rem := h.remembered("tab1", "m1"); rem == nil || rem.Reason != events.ReasonNotAllowed {
		t.Errorf("mutation log holds %+v for the refused m1, want it remembered as not_allowed", rem)
	}
}

func TestIngester_Run_RejectsDevicesWithoutRightsOnUnit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north", "south")
	tab1 := h.watchResults("tab1")
	tab2 := h.watchResults("tab2")
	h.start(Options{Rights: Rights{Devices: map[string][]string{"tab1": {"north"}}}})

	h.upload(mutation(t, "tab1", "m1", "south", "r1", 0, "", map[string]any{"v": 1}))
	h.upload(mutation(t, "tab2", "m1", "north", "r1", 0, "", map[string]any{"v": 1}))
	wantResult(t, tab1.wait(t, "m1")["m1"], "tab1", "m1", events.Rejected, events.ReasonNotAllowed)
	wantResult(t, tab2.wait(t, "m1")["m1"], "tab2", "m1", events.Rejected, events.ReasonNotAllowed)

	h.upload(mutation(t, "tab1", "m2", "north", "r1", 0, "", map[string]any{"v": 2}))
	r := tab1.wait(t, "m2")["m2"]
	wantResult(t, r, "tab1", "m2", events.Accepted, "")

	if dev := fromDevices(h.orgChanges("south")); len(dev) != 0 {
		t.Errorf("south holds device changes: %+v", dev)
	}
	north := fromDevices(h.orgChanges("north"))
	if len(north) != 1 || north[0].Env.Origin.DeviceID != "tab1" || north[0].Seq != r.Version {
		t.Errorf("north device changes = %+v, want only tab1's m2 at %d", north, r.Version)
	}
}
