package localapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// env is a real broker, a real agent syncing from it and the agent's local
// API served on a loopback port.
type env struct {
	broker   *fstest.Broker
	agent    *agent.Agent
	base     string // http://127.0.0.1:port
	client   *localapi.Client
	token    string            // the local API token
	versions map[string]uint64 // record id -> version published
}

// startEnv publishes north: 3 events and a document, south: 2 events, and a
// tenant-wide setting; then starts the agent and its API and waits for the
// initial sync to complete.
func startEnv(t *testing.T) *env {
	t.Helper()
	e := &env{broker: fstest.MustStartBroker(t, "north", "south"), versions: map[string]uint64{}}
	pub := func(unit string, ch events.Channel, kind, id string) {
		e.versions[id] = e.broker.MustPublish(t, fstest.Change(t, unit, ch, kind, id, map[string]any{"title": "T " + id, "n": 1}))
	}
	pub("north", events.ChannelEvents, "event", "n-ev-1")
	pub("north", events.ChannelEvents, "event", "n-ev-2")
	pub("north", events.ChannelEvents, "action", "n-act-1")
	pub("north", events.ChannelDocuments, "document", "n-doc-1")
	pub("south", events.ChannelEvents, "event", "s-ev-1")
	pub("south", events.ChannelEvents, "finding", "s-fnd-1")
	pub("", events.ChannelAdmin, "setting", "tenant-set-1")

	cfg := agent.Config{RefreshMode: blockingMode(), DeviceID: "tab-1", User: "alice", OrgUnits: []string{"north", "south"}, BrokerURL: e.broker.URL(),
		DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", StallTimeout: 5 * time.Second, BatchSize: 100}
	e.run(t, cfg)
	return e
}

// waitUpToDate polls the status until a sync completed after since (any
// completed sync when since is nil) and the agent is idle.
func (e *env) waitUpToDate(t *testing.T, since *time.Time) agent.Status {
	t.Helper()
	var st agent.Status
	fstest.Eventually(t, 15*time.Second, func() bool {
		var err error
		if st, err = e.client.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st.State == agent.StateFailed {
			t.Fatalf("sync failed: %s", st.LastError)
		}
		return st.State == agent.StateUpToDate && st.LastSyncCompleted != nil && (since == nil || st.LastSyncCompleted.After(*since))
	}, "agent up to date; last %+v", &st)
	return st
}

// send sends req with the local API token.
func (e *env) send(req *http.Request) (*http.Response, error) {
	req.Header.Set("Authorization", "Bearer "+e.token)
	return http.DefaultClient.Do(req)
}

// get fetches path and decodes the JSON answer into out.
func (e *env) get(t *testing.T, path string, out any) *http.Response {
	t.Helper()
	return e.do(t, http.MethodGet, path, "", out)
}

func (e *env) do(t *testing.T, method, path, body string, out any) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.send(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: content type %q", method, path, ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return resp
}

// wantError checks an error response's status and code.
func (e *env) wantError(t *testing.T, method, path, body string, status int, code string) {
	t.Helper()
	var eb localapi.ErrorBody
	resp := e.do(t, method, path, body, &eb)
	if resp.StatusCode != status || eb.Error.Code != code || eb.Error.Message == "" {
		t.Fatalf("%s %s: %d %+v, want %d with code %q and a message", method, path, resp.StatusCode, eb, status, code)
	}
}

type recordsResp struct {
	Records []store.Record `json:"records"`
	Count   int            `json:"count"`
}

func ids(recs []store.Record) string {
	var out []string
	for _, r := range recs {
		out = append(out, r.RecordID)
	}
	return strings.Join(out, ",")
}

func TestHandler_Status(t *testing.T) {
	e := startEnv(t)
	var raw map[string]any
	if resp := e.get(t, "/v1/status", &raw); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, k := range []string{"device_id", "org_units", "state", "online_only", "connected", "progress", "channels", "sync_errors",
		"protocol_version", "last_sync_completed", "last_sync_started", "next_sync", "user"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status has no %q: %v", k, raw)
		}
	}
	if raw["device_id"] != "tab-1" || raw["user"] != "alice" || raw["state"] != "up_to_date" ||
		raw["online_only"] != false || raw["connected"] != true || raw["sync_errors"] != float64(0) ||
		raw["protocol_version"] != float64(events.SchemaVersion) {
		t.Fatalf("status values: %v", raw)
	}
	if units, _ := raw["org_units"].([]any); len(units) != 2 || units[0] != "north" || units[1] != "south" {
		t.Fatalf("org_units %v", raw["org_units"])
	}
	if _, err := time.Parse(time.RFC3339Nano, raw["last_sync_completed"].(string)); err != nil {
		t.Fatalf("last_sync_completed: %v", err)
	}
	if _, ok := raw["progress"].([]any); !ok {
		t.Fatalf("progress is not an array: %v", raw["progress"])
	}

	var st agent.Status
	e.get(t, "/v1/status", &st)
	want := map[events.Channel]int{events.ChannelEvents: 5, events.ChannelAdmin: 1, events.ChannelDocuments: 1}
	if len(st.Channels) != 3 {
		t.Fatalf("channels %+v", st.Channels)
	}
	for _, c := range st.Channels {
		if c.Records != want[c.Channel] {
			t.Errorf("channel %s: %d records, want %d", c.Channel, c.Records, want[c.Channel])
		}
		if len(c.Units) == 0 {
			t.Errorf("channel %s: no checkpoints", c.Channel)
		}
	}
	for _, p := range st.Progress {
		if !p.Done || p.Received != p.Expected {
			t.Errorf("progress after a completed sync: %+v", p)
		}
	}
}

func TestHandler_Records(t *testing.T) {
	e := startEnv(t)
	var all recordsResp
	if resp := e.get(t, "/v1/records?channel=events", &all); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if all.Count != 5 || len(all.Records) != 5 {
		t.Fatalf("got %d records (%s), want 5", all.Count, ids(all.Records))
	}
	// Ordered by unit, kind, id.
	if got := ids(all.Records); got != "n-act-1,n-ev-1,n-ev-2,s-ev-1,s-fnd-1" {
		t.Fatalf("records %s", got)
	}
	for _, r := range all.Records {
		if r.Version != e.versions[r.RecordID] || r.Channel != events.ChannelEvents || r.Body["title"] != "T "+r.RecordID {
			t.Fatalf("record %+v: want version %d and its title", r, e.versions[r.RecordID])
		}
	}

	cases := map[string]string{
		"/v1/records?channel=events&org_unit=north":              "n-act-1,n-ev-1,n-ev-2",
		"/v1/records?channel=events&kind=event":                  "n-ev-1,n-ev-2,s-ev-1",
		"/v1/records?channel=events&limit=2":                     "n-act-1,n-ev-1",
		"/v1/records?channel=events&limit=2&offset=3":            "s-ev-1,s-fnd-1",
		"/v1/records?channel=events&org_unit=south&kind=finding": "s-fnd-1",
		"/v1/records?channel=admin&org_unit=":                    "tenant-set-1",
		"/v1/records?channel=documents":                          "n-doc-1",
		"/v1/records?channel=events&org_unit=east":               "",
	}
	for path, want := range cases {
		var r recordsResp
		if resp := e.get(t, path, &r); resp.StatusCode != http.StatusOK || ids(r.Records) != want || r.Count != len(r.Records) {
			t.Errorf("%s: %d %q (count %d), want %q", path, resp.StatusCode, ids(r.Records), r.Count, want)
		}
	}
}

// TestHandler_Records_KeyAndID: after= pages by key, id= selects one record.
func TestHandler_Records_KeyAndID(t *testing.T) {
	e := startEnv(t)
	cases := map[string]string{
		"/v1/records?channel=events&after=north/event/n-ev-1":                           "n-ev-2,s-ev-1,s-fnd-1",
		"/v1/records?channel=events&org_unit=north&kind=event&after=north/event/n-ev-1": "n-ev-2",
		"/v1/records?channel=events&org_unit=south&kind=event&id=s-ev-1":                "s-ev-1",
		"/v1/records?channel=events&id=n-ev-2":                                          "n-ev-2",
		"/v1/records?channel=events&org_unit=north&kind=event&id=s-ev-1":                "",
		"/v1/records?channel=admin&org_unit=&after=/setting/a":                          "tenant-set-1",
	}
	for path, want := range cases {
		var r localapi.RecordsPage
		if resp := e.get(t, path, &r); resp.StatusCode != http.StatusOK || ids(r.Records) != want || r.Count != len(r.Records) {
			t.Errorf("%s: %d %q (count %d), want %q", path, resp.StatusCode, ids(r.Records), r.Count, want)
		}
	}
}

// TestHandler_Records_Paging walks a channel page by page with next.
func TestHandler_Records_Paging(t *testing.T) {
	e := startEnv(t)
	var got []string
	path := "/v1/records?channel=events&limit=2"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatalf("still paging after %d pages: %v", pages, got)
		}
		var p localapi.RecordsPage
		if resp := e.get(t, path, &p); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		got = append(got, ids(p.Records))
		if p.Next == "" {
			break
		}
		if len(p.Records) != 2 || p.Next != localapi.Cursor(p.Records[1]) {
			t.Fatalf("%s: next %q after %s", path, p.Next, ids(p.Records))
		}
		path = "/v1/records?channel=events&limit=2&after=" + url.QueryEscape(p.Next)
	}
	// Five records in pages of two: the third page is short, so it has no next.
	if want := "n-act-1,n-ev-1|n-ev-2,s-ev-1|s-fnd-1"; strings.Join(got, "|") != want {
		t.Fatalf("pages %q, want %q", strings.Join(got, "|"), want)
	}
}

func TestHandler_Records_BadRequest(t *testing.T) {
	e := startEnv(t)
	for _, path := range []string{
		"/v1/records?channel=gossip",
		"/v1/records",
		"/v1/records?channel=events&limit=-1",
		"/v1/records?channel=events&offset=x",
		"/v1/records?channel=events&kind=a.b",
		"/v1/records?channel=events&after=n-ev-1",
		"/v1/records?channel=events&after=north/event",
		"/v1/records?channel=events&after=north//n-ev-1",
		"/v1/records?channel=events&after=north/event/",
		"/v1/records?channel=events&after=a/b/c/d",
	} {
		e.wantError(t, http.MethodGet, path, "", http.StatusBadRequest, "bad_request")
	}
}

func TestHandler_NotFound(t *testing.T) {
	e := startEnv(t)
	e.wantError(t, http.MethodGet, "/v2/nothing", "", http.StatusNotFound, "not_found")
	e.wantError(t, http.MethodGet, "/v1/status/extra", "", http.StatusNotFound, "not_found")
	e.wantError(t, http.MethodGet, "/v1/sync", "", http.StatusMethodNotAllowed, "method_not_allowed")
	e.wantError(t, http.MethodDelete, "/v1/conflicts/x/undo", "", http.StatusMethodNotAllowed, "method_not_allowed")
}

func TestHandler_Page(t *testing.T) {
	e := startEnv(t)
	resp, err := http.Get(e.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(string(b), "<html") || !strings.Contains(string(b), "/v1/status") {
		t.Fatalf("page does not look like the status page: %.200s", b)
	}
}

func TestHandler_Sync(t *testing.T) {
	e := startEnv(t)
	e.wantError(t, http.MethodPost, "/v1/sync", `{"scope":"bogus"}`, http.StatusBadRequest, "bad_request")
	e.wantError(t, http.MethodPost, "/v1/sync", `{"scope":`, http.StatusBadRequest, "bad_request")

	before := e.waitUpToDate(t, nil)
	// A change published after the initial sync arrives with the requested one.
	v := e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "n-ev-new", map[string]any{"title": "new"}))

	var ok struct {
		Queued bool   `json:"queued"`
		Scope  string `json:"scope"`
		At     string `json:"at"`
	}
	resp := e.do(t, http.MethodPost, "/v1/sync", `{"scope":"events"}`, &ok)
	if resp.StatusCode != http.StatusAccepted || !ok.Queued || ok.Scope != "events" || ok.At == "" {
		t.Fatalf("sync events: %d %+v, want 202 queued", resp.StatusCode, ok)
	}
	e.waitUpToDate(t, before.LastSyncCompleted)
	var r recordsResp
	e.get(t, "/v1/records?channel=events&org_unit=north&kind=event", &r)
	if ids(r.Records) != "n-ev-1,n-ev-2,n-ev-new" || r.Records[2].Version != v {
		t.Fatalf("after sync: %s, want the new event at version %d", ids(r.Records), v)
	}
}

func TestServe(t *testing.T) {
	h := http.NotFoundHandler()
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:0", ":0", "example.com:0", "[::]:0"} {
		called := false
		err := localapi.Serve(context.Background(), addr, h, func(net.Addr) { called = true })
		if !errors.Is(err, localapi.ErrNotLoopback) || called {
			t.Errorf("Serve(%q) = %v (ready called %v), want ErrNotLoopback", addr, err, called)
		}
	}
	if err := localapi.Serve(context.Background(), "no-port", h, nil); err == nil || errors.Is(err, localapi.ErrNotLoopback) {
		t.Errorf("Serve(no-port) = %v, want an address error", err)
	}

	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ctx, cancel := context.WithCancel(context.Background())
		addrc, errc := make(chan net.Addr, 1), make(chan error, 1)
		handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })
		go func() { errc <- localapi.Serve(ctx, addr, handler, func(a net.Addr) { addrc <- a }) }()
		var got net.Addr
		select {
		case got = <-addrc:
		case err := <-errc:
			cancel()
			t.Fatalf("Serve(%q): %v", addr, err)
		case <-time.After(5 * time.Second):
			cancel()
			t.Fatalf("Serve(%q) not ready", addr)
		}
		tcp, ok := got.(*net.TCPAddr)
		if !ok || !tcp.IP.IsLoopback() || tcp.Port == 0 {
			cancel()
			t.Fatalf("Serve(%q) bound %v", addr, got)
		}
		resp, err := http.Get("http://" + got.String() + "/")
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello" {
			t.Errorf("served %q", b)
		}
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve(%q) after cancel: %v", addr, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Serve(%q) did not return after cancel", addr)
		}
	}
}

// blockingMode turns refresh mode off: these tests look at changes as soon
// as a sync applied them.
func blockingMode() *bool {
	off := false
	return &off
}

// run opens the agent of cfg, runs it and serves its local API until the
// test ends, and waits for its first sync to complete.
func (e *env) run(t *testing.T, cfg agent.Config) {
	t.Helper()
	if cfg.Credentials == "" { // the device's own, issued as an operator would
		cfg.Credentials = e.broker.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	}
	a, err := agent.Open(ctxT(t), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	e.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	runErr, serveErr := make(chan error, 1), make(chan error, 1)
	addrc := make(chan net.Addr, 1)
	go func() { runErr <- a.Run(ctx) }()
	tok, err := localapi.EnsureToken(localapi.TokenPath(cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	e.token = tok
	h := localapi.Handler(a, localapi.Options{Token: tok, Log: quietLog(), Metrics: a.Metrics()})
	go func() {
		serveErr <- localapi.Serve(ctx, cfg.APIAddr, h, func(addr net.Addr) { addrc <- addr })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-serveErr; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
		a.Close()
	})
	select {
	case addr := <-addrc:
		e.base = "http://" + addr.String()
	case err := <-serveErr:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("local API did not start")
	}
	e.client = localapi.NewClient(e.base, e.token)
	e.waitUpToDate(t, nil)
}
