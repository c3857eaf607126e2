package seed

import (
	"fmt"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
)

// Demo returns a small, readable data set for units: events, actions and
// findings, admin settings, role permissions and user assignments (some
// tenant-wide), and then a few updates and deletes, so a device's initial
// sync has to take the latest version of each record. Documents, which
// carry content, are [DemoDocuments].
func Demo(units []string) []*events.Envelope {
	var out []*events.Envelope
	n := 0
	add := func(unit string, ch events.Channel, kind, id string, body map[string]any) {
		n++
		e := &events.Envelope{EventID: fmt.Sprintf("demo-%d-%d", time.Now().UnixNano(), n), OrgUnit: unit, Channel: ch,
			Kind: kind, RecordID: id, Op: events.OpDelete, SchemaVersion: events.SchemaVersion, Timestamp: time.Now().UTC()}
		if body != nil {
			e.Op, e.Body = events.OpUpsert, mustMsgpack(body)
		}
		out = append(out, e)
	}
	add("", events.ChannelAdmin, "setting", "sync-interval", map[string]any{"title": "Delta sync interval", "value": "30m"})
	add("", events.ChannelAdmin, "role_permission", "inspector-events", map[string]any{"title": "Inspectors edit events", "role": "inspector", "allow": []string{"event:write"}})
	add("", events.ChannelAdmin, "role_permission", "lead-all", map[string]any{"title": "Lead inspectors edit every event-channel record", "role": "lead", "allow": []string{"*:write"}})
	for _, u := range units {
		add(u, events.ChannelAdmin, "org_unit", u, map[string]any{"title": "Org unit " + u})
		add(u, events.ChannelAdmin, "user_assignment", "alice", map[string]any{"title": "Alice → inspector", "user": "alice", "role": "inspector"})
		for i := 1; i <= 12; i++ {
			add(u, events.ChannelEvents, "event", fmt.Sprintf("insp-%03d", i), map[string]any{
				"title": fmt.Sprintf("Safety inspection %d (%s)", i, u), "status": "open", "due_at": time.Now().AddDate(0, 0, i).Format(time.DateOnly)})
		}
		for i := 1; i <= 4; i++ {
			add(u, events.ChannelEvents, "action", fmt.Sprintf("act-%03d", i), map[string]any{"title": fmt.Sprintf("Replace extinguisher %d", i), "status": "open"})
			add(u, events.ChannelEvents, "finding", fmt.Sprintf("fnd-%03d", i), map[string]any{"title": fmt.Sprintf("Blocked exit %d", i), "severity": "high"})
		}
		// History: updates and deletes the device must not see as separate records.
		add(u, events.ChannelEvents, "event", "insp-001", map[string]any{"title": "Safety inspection 1 (" + u + ")", "status": "closed"})
		add(u, events.ChannelEvents, "event", "insp-002", nil)
		add(u, events.ChannelAdmin, "user_assignment", "alice", map[string]any{"title": "Alice → lead inspector", "user": "alice", "role": "lead"})
	}
	return out
}

// DemoDocument is one document of the demo, with its content.
type DemoDocument struct {
	OrgUnit, ID, Name, ContentType string
	Meta                           map[string]any
	Content                        []byte
}

// DemoDocuments returns the demo's documents for units: a few procedures
// and forms per unit, as text, each some tens of KB.
func DemoDocuments(units []string) []DemoDocument {
	var out []DemoDocument
	for _, u := range units {
		for i := 1; i <= 4; i++ {
			var b strings.Builder
			fmt.Fprintf(&b, "# Procedure %d (%s)\n\n", i, u)
			for step := 1; step <= 400*i; step++ {
				fmt.Fprintf(&b, "%d. Check item %d of the site walk-through and record what you find.\n", step, step)
			}
			out = append(out, DemoDocument{OrgUnit: u, ID: fmt.Sprintf("proc-%03d", i), Name: fmt.Sprintf("Procedure %d.md", i),
				ContentType: "text/markdown", Meta: map[string]any{"section": "procedures", "revision": 1}, Content: []byte(b.String())})
		}
		out = append(out, DemoDocument{OrgUnit: u, ID: "form-incident", Name: "Incident report form.txt", ContentType: "text/plain",
			Meta: map[string]any{"section": "forms"}, Content: []byte("Incident report\n\nDate:\nLocation:\nWhat happened:\nActions taken:\n")})
	}
	return out
}

// DemoChange returns the i-th change of the demo's live feed: a new event
// in one of units.
func DemoChange(units []string, i int) *events.Envelope {
	u := units[i%len(units)]
	return &events.Envelope{EventID: fmt.Sprintf("demo-live-%d-%d", time.Now().UnixNano(), i), OrgUnit: u, Channel: events.ChannelEvents,
		Kind: "event", RecordID: fmt.Sprintf("live-%04d", i), Op: events.OpUpsert, SchemaVersion: events.SchemaVersion,
		Timestamp: time.Now().UTC(), Body: mustMsgpack(map[string]any{"title": fmt.Sprintf("Ad-hoc inspection %d (%s)", i, u), "status": "open"})}
}

func mustMsgpack(m map[string]any) []byte {
	b, err := msgpack.Marshal(m)
	if err != nil {
		panic(err) // only fixed, known-good literals reach here
	}
	return b
}
