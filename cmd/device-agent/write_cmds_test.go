package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

// startWriteAgent runs a real broker holding north/events/event/ev-1, the
// real server-side ingest (default rights: events only), and a real agent
// with a 50ms autosync serving its local API. It returns the API address
// and ev-1's version once the initial sync has completed.
func startWriteAgent(t *testing.T) (string, *fstest.Broker, uint64) {
	t.Helper()
	b := fstest.MustStartBroker(t, "north")
	v1 := b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "ev-1", map[string]any{"title": "Title ev-1"}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	ictx, icancel := context.WithCancel(context.Background())
	idone := make(chan error, 1)
	go func() { idone <- ingest.New(b.IngestClient(t), ingest.Options{Log: log}).Run(ictx) }()
	t.Cleanup(func() {
		icancel()
		if err := <-idone; err != nil {
			t.Errorf("ingest: %v", err)
		}
	})

	cfg := agent.Config{RefreshMode: blockingMode(), DeviceID: "tab-cli", User: "bob", OrgUnits: []string{"north"}, BrokerURL: b.URL(),
		DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", StallTimeout: 5 * time.Second, AutosyncInterval: 50 * time.Millisecond}
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	api := serveAgent(t, cfg, log)
	c := apiClient(t, api)
	waitFor(t, "initial sync", func() (bool, string) {
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.State == agent.StateFailed {
			t.Fatalf("initial sync failed: %s", st.LastError)
		}
		return st.State == agent.StateUpToDate, fmt.Sprintf("%+v", st)
	})
	return api, b, v1
}

// waitFor waits with [fstest.Eventually] until cond holds, failing after
// 15s with cond's last description.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last lastText
	fstest.Eventually(t, 15*time.Second, func() bool {
		ok, desc := cond()
		last = lastText(desc)
		return ok
	}, "%s; last: %s", what, &last)
}

// lastText is a description that a pointer formats when the message is
// printed, not when it is passed: a wait's last observation.
type lastText string

func (l *lastText) String() string { return string(*l) }

var queuedLine = regexp.MustCompile(`^queued (m\S+) \(based on version (\d+)\)\n$`)

// mustWriteCmd runs the write command and returns the queued mutation id.
func mustWriteCmd(t *testing.T, api string, args ...string) (string, string) {
	t.Helper()
	out := mustRun(t, append([]string{"write", "--api", api}, args...)...)
	m := queuedLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("write %v printed %q, want queued m... (based on version N)", args, out)
	}
	return m[1], m[2]
}

func waitConflicts(t *testing.T, c *localapi.Client, n int) []store.Conflict {
	t.Helper()
	var cs []store.Conflict
	waitFor(t, fmt.Sprintf("%d sync errors", n), func() (bool, string) {
		var err error
		if cs, err = c.Conflicts(context.Background()); err != nil {
			t.Fatal(err)
		}
		return len(cs) == n, fmt.Sprintf("%+v", cs)
	})
	return cs
}

func TestWriteCmd(t *testing.T) {
	api, b, v1 := startWriteAgent(t)
	c := apiClient(t, api)
	ctx := context.Background()

	id, base := mustWriteCmd(t, api, "--org", "north", "--kind", "event", "--id", "w1", "--body", `{"n": 1}`)
	if base != "0" {
		t.Fatalf("new record based on version %s, want 0", base)
	}
	// The write reached the agent: the record is local at once, with the body given.
	recs, err := c.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", Kind: "event"})
	if err != nil || len(recs) != 2 || recs[1].RecordID != "w1" || recs[1].Body["n"] != float64(1) {
		t.Fatalf("records after write: %+v %v, want ev-1 and w1 with n=1", recs, err)
	}
	// It goes up and is accepted.
	waitFor(t, "w1 accepted", func() (bool, string) {
		recs, err := c.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", Kind: "event"})
		if err != nil {
			t.Fatal(err)
		}
		return len(recs) == 2 && !recs[1].Pending && recs[1].Version > v1, fmt.Sprintf("%+v", recs)
	})
	if dc := b.DeviceChanges(t, "north"); len(dc) != 1 || dc[0].Origin.MutationID != id || dc[0].RecordID != "w1" {
		t.Fatalf("device changes on the server: %+v, want mutation %s of w1", dc, id)
	}

	// A change of an existing record is based on its version; --json prints the response.
	out := mustRun(t, "write", "--api", api, "--json", "--org", "north", "--kind", "event", "--id", "ev-1", "--delete")
	var wr localapi.WriteResponse
	if err := json.Unmarshal([]byte(out), &wr); err != nil || !strings.HasPrefix(wr.MutationID, "m") || wr.BaseVersion != v1 ||
		wr.State != store.StateQueued {
		t.Fatalf("write --json --delete: %v %q, want a queued mutation based on %d", err, out, v1)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := st.PendingWrites
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"both --delete and --body", []string{"--org", "north", "--kind", "event", "--id", "w2", "--delete", "--body", `{"n": 1}`}, "exactly one"},
		{"neither --delete nor --body", []string{"--org", "north", "--kind", "event", "--id", "w2"}, "exactly one"},
		{"body not JSON", []string{"--org", "north", "--kind", "event", "--id", "w2", "--body", `{"n":`}, "--body"},
		{"body not an object", []string{"--org", "north", "--kind", "event", "--id", "w2", "--body", `[1]`}, "--body"},
		{"missing --id", []string{"--org", "north", "--kind", "event", "--body", `{"n": 1}`}, "id"},
		{"foreign org unit", []string{"--org", "east", "--kind", "event", "--id", "w2", "--body", `{"n": 1}`}, "bad_write"},
		{"dotted id", []string{"--org", "north", "--kind", "event", "--id", "w.2", "--body", `{"n": 1}`}, "bad_write"},
	} {
		out, err := run(t, append([]string{"write", "--api", api}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v (output %q), want an error mentioning %q", tc.name, err, out, tc.want)
		}
		if strings.Contains(out, "queued") {
			t.Errorf("%s: printed %q", tc.name, out)
		}
	}
	// None of them reached the agent.
	recs, err = c.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if strings.HasPrefix(r.RecordID, "w2") || r.RecordID == "w.2" {
			t.Fatalf("a refused write made record %+v", r)
		}
	}
	if st, err := c.Status(ctx); err != nil || st.PendingWrites > before || st.SyncErrors != 0 {
		t.Fatalf("status after refused writes: %+v %v (pending before: %d)", st, err, before)
	}
}

func TestConflictsCmd(t *testing.T) {
	api, b, v1 := startWriteAgent(t)
	c := apiClient(t, api)

	if out := mustRun(t, "conflicts", "--api", api); out != "no sync errors\n" {
		t.Fatalf("conflicts with none printed %q", out)
	}
	out := mustRun(t, "conflicts", "--json", "--api", api)
	var none []map[string]any
	if err := json.Unmarshal([]byte(out), &none); err != nil || none == nil || len(none) != 0 {
		t.Fatalf("conflicts --json with none: %v %q, want an empty JSON list", err, out)
	}

	// A rejection: devices may not write admin settings.
	rejID, _ := mustWriteCmd(t, api, "--org", "north", "--channel", "admin", "--kind", "setting", "--id", "s1", "--body", `{"k": "v"}`)
	// A conflict: the server changes ev-1 after the device synced it.
	v2 := b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "ev-1", map[string]any{"title": "server"}))
	confID, base := mustWriteCmd(t, api, "--org", "north", "--kind", "event", "--id", "ev-1", "--body", `{"title": "device"}`)
	if base != fmt.Sprint(v1) {
		t.Fatalf("write of ev-1 based on version %s, want %d", base, v1)
	}
	waitConflicts(t, c, 2)

	out = mustRun(t, "conflicts", "--api", api)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 || !regexp.MustCompile(`^ID\s+STATE\s+RECORD\s+LOCAL\s+SERVER\s+WHY$`).MatchString(lines[0]) ||
		lines[3] != "resolve with: device-agent resolve ID undo|undelete|retry" {
		t.Fatalf("conflicts table:\n%s", out)
	}
	rows := map[string]*regexp.Regexp{
		rejID:  regexp.MustCompile(`^` + rejID + `\s+rejected\s+north/setting/s1\s+upsert\s+version 0\s+not_allowed$`),
		confID: regexp.MustCompile(fmt.Sprintf(`^%s\s+conflict\s+north/event/ev-1\s+upsert\s+version %d\s+record is at version %d, the change was based on %d$`, confID, v2, v2, v1)),
	}
	for id, re := range rows {
		found := false
		for _, l := range lines[1:3] {
			found = found || re.MatchString(l)
		}
		if !found {
			t.Errorf("no row for %s matching %s:\n%s", id, re, out)
		}
	}

	out = mustRun(t, "conflicts", "--json", "--api", api)
	var cs []store.Conflict
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatalf("conflicts --json is not a JSON list: %v\n%s", err, out)
	}
	var raw []map[string]any
	json.Unmarshal([]byte(out), &raw)
	if len(cs) != 2 || len(raw) != 2 || cs[0].MutationID != rejID || cs[0].State != store.StateRejected || raw[0]["id"] != rejID ||
		cs[1].MutationID != confID || cs[1].State != store.StateConflict || cs[1].ServerVersion != v2 || cs[1].ServerBody["title"] != "server" ||
		cs[1].LocalBody["title"] != "device" {
		t.Fatalf("conflicts --json: %+v", cs)
	}
}

func TestResolveCmd(t *testing.T) {
	api, _, _ := startWriteAgent(t)
	c := apiClient(t, api)
	id, _ := mustWriteCmd(t, api, "--org", "north", "--channel", "admin", "--kind", "setting", "--id", "s1", "--body", `{"k": "v"}`)
	waitConflicts(t, c, 1)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nope", "undo"}, "not_found"},
		{[]string{id, "retry"}, "cannot_resolve"},
		{[]string{id, "explode"}, "cannot_resolve"},
		{[]string{id}, "accepts 2 arg(s)"},
	} {
		out, err := run(t, append([]string{"resolve", "--api", api}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(out, "done") {
			t.Errorf("resolve %v: %v (output %q), want an error mentioning %q", tc.args, err, out, tc.want)
		}
	}
	if cs, err := c.Conflicts(context.Background()); err != nil || len(cs) != 1 {
		t.Fatalf("failed resolves changed the conflicts: %+v %v", cs, err)
	}

	if out := mustRun(t, "resolve", "--api", api, id, "undo"); out != id+": undo done\n" {
		t.Fatalf("resolve undo printed %q, want %q", out, id+": undo done\n")
	}
	if out := mustRun(t, "conflicts", "--api", api); out != "no sync errors\n" {
		t.Fatalf("conflicts after undo: %q", out)
	}
	recs, err := c.Records(context.Background(), store.Query{Channel: events.ChannelAdmin, Unit: store.AnyUnit})
	if err != nil || len(recs) != 0 {
		t.Fatalf("admin records after undo: %+v %v, want none", recs, err)
	}
	// Done once: the same id is now unknown.
	if _, err := run(t, "resolve", "--api", api, id, "undo"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("second undo: %v, want not_found", err)
	}
}
