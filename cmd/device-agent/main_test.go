package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

// startAgent runs a real broker with a few records, a real agent syncing
// them and its local API; it returns the API address once the initial sync
// has completed.
func startAgent(t *testing.T) (string, *fstest.Broker) {
	t.Helper()
	b := fstest.MustStartBroker(t, "north")
	for _, id := range []string{"ev-1", "ev-2", "ev-3"} {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"title": "Title " + id}))
	}
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelDocuments, "document", "doc-1", map[string]any{"title": "Doc"}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := agent.Config{RefreshMode: blockingMode(), DeviceID: "tab-cli", User: "bob", OrgUnits: []string{"north"}, BrokerURL: b.URL(),
		DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", StallTimeout: 5 * time.Second}
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	api := serveAgent(t, cfg, log)
	c := apiClient(t, api)
	var st agent.Status
	fstest.Eventually(t, 15*time.Second, func() bool {
		var err error
		if st, err = c.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st.State == agent.StateFailed {
			t.Fatalf("initial sync did not complete: %+v", st)
		}
		return st.State == agent.StateUpToDate
	}, "initial sync to complete; last status %+v", &st)
	return api, b
}

// run executes the CLI with args and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("device-agent %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestStatusCmd_Run(t *testing.T) {
	api, _ := startAgent(t)
	out := mustRun(t, "status", "--api", api)
	for _, want := range []string{
		"device      tab-cli (org units north)",
		"state       up_to_date\n",
		"broker      connected",
		"sync errors 0",
		"CHANNEL",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	for _, re := range []string{`(?m)^events\s+3\s+north:3$`, `(?m)^admin\s+0\s+tenant:0 north:0$`, `(?m)^documents\s+1\s+north:4$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status output has no row matching %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "online only") || strings.Contains(out, "last sync   never") {
		t.Errorf("status after a full sync says online only / never synced:\n%s", out)
	}
}

func TestStatusCmd_JSON(t *testing.T) {
	api, _ := startAgent(t)
	out := mustRun(t, "status", "--json", "--api", api)
	var st agent.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	if raw["device_id"] != "tab-cli" || st.State != agent.StateUpToDate || st.OnlineOnly || len(st.Channels) != 3 {
		t.Fatalf("status --json: %+v", st)
	}
}

func TestRecordsCmd_JSON(t *testing.T) {
	api, _ := startAgent(t)
	out := mustRun(t, "records", "--channel", "events", "--json", "--api", api)
	var recs []store.Record
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("records --json is not a JSON array: %v\n%s", err, out)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.RecordID)
		if r.OrgUnit != "north" || r.Kind != "event" || r.Version == 0 || r.Body["title"] != "Title "+r.RecordID {
			t.Errorf("record %+v", r)
		}
	}
	if strings.Join(got, ",") != "ev-1,ev-2,ev-3" {
		t.Fatalf("records %v, want ev-1..3", got)
	}

	// Filters reach the API.
	out = mustRun(t, "records", "--channel", "events", "--limit", "1", "--json", "--api", api)
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != 1 || recs[0].RecordID != "ev-1" {
		t.Fatalf("--limit 1: %v %+v", err, recs)
	}
	// --all reads page after page (here pages of one record).
	out = mustRun(t, "records", "--channel", "events", "--limit", "1", "--all", "--json", "--api", api)
	got = got[:0]
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("--all: %v", err)
	}
	for _, r := range recs {
		got = append(got, r.RecordID)
	}
	if strings.Join(got, ",") != "ev-1,ev-2,ev-3" {
		t.Fatalf("--all in pages of 1: %v, want ev-1..3", got)
	}
	out = mustRun(t, "records", "--channel", "events", "--org", "south", "--json", "--api", api)
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != 0 {
		t.Fatalf("--org south: %v %+v", err, recs)
	}
}

func TestRecordsCmd_Table(t *testing.T) {
	api, _ := startAgent(t)
	out := mustRun(t, "records", "--channel", "documents", "--api", api)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ORG UNIT") || !strings.Contains(lines[1], "doc-1") || !strings.Contains(lines[1], "Doc") {
		t.Fatalf("records table:\n%s", out)
	}
}

func TestRecordsCmd_Errors(t *testing.T) {
	api, _ := startAgent(t)
	if _, err := run(t, "records", "--api", api); err == nil || !strings.Contains(err.Error(), "channel") {
		t.Errorf("records without --channel: %v", err)
	}
	if _, err := run(t, "records", "--channel", "gossip", "--api", api); err == nil {
		t.Error("records --channel gossip: no error")
	}
	if _, err := run(t, "records", "--channel", "events", "--kind", "a.b", "--api", api); err == nil || !strings.Contains(err.Error(), "bad_request") {
		t.Errorf("records with a kind that is not a subject token: %v, want the API's bad_request", err)
	}
}

var syncLine = []*regexp.Regexp{
	regexp.MustCompile(`^sync \w+ queued$`),
	regexp.MustCompile(`^progress \S+ \w+ \d+/\d+$`),
	regexp.MustCompile(`^sync completed at .+, \d+ sync errors$`),
}

func TestSyncCmd_Wait(t *testing.T) {
	api, b := startAgent(t)
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "ev-4", map[string]any{"title": "Title ev-4"}))
	out := mustRun(t, "sync", "--scope", "events", "--wait", "--api", api)
	t.Logf("sync --wait output:\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for _, l := range lines {
		ok := false
		for _, re := range syncLine {
			ok = ok || re.MatchString(l)
		}
		if !ok {
			t.Errorf("line %q matches no expected form; output:\n%s", l, out)
		}
	}
	if lines[0] != "sync events queued" {
		t.Errorf("first line %q, want sync events queued", lines[0])
	}
	if !syncLine[2].MatchString(lines[len(lines)-1]) || !strings.HasSuffix(lines[len(lines)-1], ", 0 sync errors") {
		t.Errorf("last line %q is not the completion line", lines[len(lines)-1])
	}
	if !strings.Contains(out, "progress north events ") {
		t.Errorf("no progress line for north/events:\n%s", out)
	}
	if strings.Contains(out, "\r") || strings.Contains(out, "\x1b") {
		t.Errorf("non-TTY output has control characters: %q", out)
	}
	// The sync really ran: the new record is local.
	recs, err := apiClient(t, api).Records(context.Background(), store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit})
	if err != nil || len(recs) != 4 {
		t.Fatalf("after sync --wait: %d records (%v), want 4", len(recs), err)
	}
}

func TestSyncCmd_NoWait(t *testing.T) {
	api, _ := startAgent(t)
	out := mustRun(t, "sync", "--scope", "admin", "--api", api)
	if out != "sync admin queued\n" {
		t.Fatalf("sync without --wait printed %q", out)
	}
	if _, err := run(t, "sync", "--scope", "bogus", "--api", api); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("sync --scope bogus: %v", err)
	}
}

func TestStatusCmd_Unreachable(t *testing.T) {
	t.Setenv("FIELDSYNC_AGENT_TOKEN", "any")
	if _, err := run(t, "status", "--api", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "not reachable") {
		t.Fatalf("status against no agent: %v", err)
	}
}

func TestRunCmd_BadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte("device_id: tab-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "run", "--config", p); err == nil || !strings.Contains(err.Error(), "org_units") {
		t.Fatalf("run with no org units: %v", err)
	}
	if _, err := run(t, "run", "--config", filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("run with a missing config: no error")
	}
}

// blockingMode turns refresh mode off: these tests look at changes as soon
// as a sync applied them.
func blockingMode() *bool {
	off := false
	return &off
}

// serveAgent opens the agent of cfg and runs it with its local API until
// the test ends; it returns the API address.
// useConfig points the CLI at a config file for cfg, as a person running
// the CLI next to the agent would: the CLI finds the token through it.
func useConfig(t *testing.T, cfg agent.Config) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "device-agent.yaml")
	yaml := fmt.Sprintf("device_id: %s\norg_units: [%s]\ndata_dir: %q\napi_addr: %s\n", cfg.DeviceID, strings.Join(cfg.OrgUnits, ", "), cfg.DataDir, cfg.APIAddr)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FIELDSYNC_AGENT_CONFIG", path)
}

// apiClient is a local API client with the agent's token.
func apiClient(t *testing.T, api string) *localapi.Client {
	t.Helper()
	c, err := (&globals{api: api, config: os.Getenv("FIELDSYNC_AGENT_CONFIG")}).client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func serveAgent(t *testing.T, cfg agent.Config, log *slog.Logger) string {
	t.Helper()
	a, err := agent.Open(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc, errc := make(chan net.Addr, 1), make(chan error, 1)
	go func() { errc <- localapi.RunAgent(ctx, a, log, func(addr net.Addr) { addrc <- addr }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("RunAgent: %v", err)
		}
		a.Close()
	})
	var api string
	select {
	case addr := <-addrc:
		api = addr.String()
		cfg.APIAddr = api
		useConfig(t, cfg)
	case err := <-errc:
		t.Fatalf("RunAgent: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("local API did not start")
	}
	return api
}
