package localapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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

// startLifecycleEnv starts a real broker holding north/events/event/srv-1,
// south/events/event/s-1 and a tenant-wide setting, then a real agent
// ("tab-lc") in the given refresh mode (nil: the default, refresh on) with
// its local API, and waits for the initial sync. autosync 0 keeps the
// default interval.
func startLifecycleEnv(t *testing.T, refresh *bool, autosync time.Duration) *env {
	t.Helper()
	e := &env{broker: fstest.MustStartBroker(t, "north", "south"), versions: map[string]uint64{}}
	pub := func(unit string, ch events.Channel, kind, id string) {
		e.versions[id] = e.broker.MustPublish(t, fstest.Change(t, unit, ch, kind, id, map[string]any{"title": "T " + id}))
	}
	pub("north", events.ChannelEvents, "event", "srv-1")
	pub("south", events.ChannelEvents, "event", "s-1")
	pub("", events.ChannelAdmin, "setting", "tenant-set-1")

	cfg := agent.Config{RefreshMode: refresh, DeviceID: "tab-lc", User: "alice", OrgUnits: []string{"north", "south"},
		BrokerURL: e.broker.URL(), DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", StallTimeout: 5 * time.Second,
		AutosyncInterval: autosync}
	e.run(t, cfg)
	return e
}

// runIngest runs the real server-side ingest until the returned stop is
// called (or the test ends); stop reports an error ingest returned.
func runIngest(t *testing.T, b *fstest.Broker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ingest.New(b.IngestClient(t), ingest.Options{Log: quietLog()}).Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ingest: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// requestSync posts {"scope": scope} to /v1/sync and requires a 202.
func (e *env) requestSync(t *testing.T, scope string) {
	t.Helper()
	var ok map[string]any
	if resp := e.do(t, http.MethodPost, "/v1/sync", `{"scope":"`+scope+`"}`, &ok); resp.StatusCode != http.StatusAccepted || ok["queued"] != true {
		t.Fatalf("POST /v1/sync %s: %d %v, want 202 queued", scope, resp.StatusCode, ok)
	}
}

// waitState polls the status until its state is want and it has a sync
// completed after since; a failed sync fails the test at once.
func (e *env) waitState(t *testing.T, want string, since *time.Time) agent.Status {
	t.Helper()
	var st agent.Status
	eventually(t, "state "+want, func() (bool, string) {
		st = e.status(t)
		if st.State == agent.StateFailed {
			t.Fatalf("sync failed: %s", st.LastError)
		}
		done := st.LastSyncCompleted != nil && (since == nil || st.LastSyncCompleted.After(*since))
		return st.State == want && done, fmt.Sprintf("%+v", st)
	})
	return st
}

func TestHandler_Apply_RefreshMode(t *testing.T) {
	e := startLifecycleEnv(t, nil, 0)
	before := e.waitUpToDate(t, nil)
	if !before.RefreshMode || before.StagedChanges != 0 || before.UpdatesAvailableSince != nil || before.AgeBand != "" || before.LastApplied != nil {
		t.Fatalf("status after the initial sync: %+v, want refresh mode on and nothing staged or applied", before)
	}
	// The initial snapshot went straight into the live view.
	if r := e.record(t, events.ChannelEvents, "srv-1"); r == nil || r.Version != e.versions["srv-1"] {
		t.Fatalf("srv-1 after the initial sync: %s", fmtRecord(r))
	}

	v := e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "n-new", map[string]any{"title": "new"}))
	e.requestSync(t, "events")
	st := e.waitState(t, agent.StateUpdatesAvailable, before.LastSyncCompleted)
	if st.UpdatesAvailableSince == nil || st.AgeBand != "green" || st.StagedChanges != 1 || st.LastApplied != nil {
		t.Fatalf("updates available: since %v, band %q, staged %d, last applied %v; want a time, green, 1, none",
			st.UpdatesAvailableSince, st.AgeBand, st.StagedChanges, st.LastApplied)
	}
	if age := time.Since(*st.UpdatesAvailableSince); age < -time.Second || age > time.Minute {
		t.Fatalf("updates_available_since %v is not about now", st.UpdatesAvailableSince)
	}
	// Staged, not live: the app still sees the old data.
	if r := e.record(t, events.ChannelEvents, "n-new"); r != nil {
		t.Fatalf("staged change already in the live view before Apply: %s", fmtRecord(r))
	}
	var recs recordsResp
	e.get(t, "/v1/records?channel=events", &recs)
	if ids(recs.Records) != "srv-1,s-1" {
		t.Fatalf("events before Apply: %s, want srv-1,s-1", ids(recs.Records))
	}

	var rep agent.ApplyReport
	if resp := e.do(t, http.MethodPost, "/v1/apply", "", &rep); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/apply: %d", resp.StatusCode)
	}
	if rep.Changes != 1 || rep.At.IsZero() || rep.Took < 0 {
		t.Fatalf("apply report %+v, want 1 change at a time", rep)
	}
	r := e.record(t, events.ChannelEvents, "n-new")
	if r == nil || r.Version != v || r.Pending || r.Body["title"] != "new" || r.OrgUnit != "north" {
		t.Fatalf("n-new after Apply: %s, want version %d with its body", fmtRecord(r), v)
	}
	st = e.status(t)
	if st.State != agent.StateUpToDate || st.LastApplied == nil || st.StagedChanges != 0 || st.UpdatesAvailableSince != nil || st.AgeBand != "" {
		t.Fatalf("status after Apply: state %s, last applied %v, staged %d, since %v, band %q; want up_to_date with last_applied",
			st.State, st.LastApplied, st.StagedChanges, st.UpdatesAvailableSince, st.AgeBand)
	}
	e.wantError(t, http.MethodPost, "/v1/apply", "", http.StatusConflict, "nothing_to_apply")
	// The refused second Apply changed nothing.
	if r := e.record(t, events.ChannelEvents, "n-new"); r == nil || r.Version != v {
		t.Fatalf("n-new after a second Apply: %s", fmtRecord(r))
	}
}

type activityResp struct {
	Activity []store.Activity `json:"activity"`
}

func TestHandler_Activity(t *testing.T) {
	e := startLifecycleEnv(t, nil, 0)
	before := e.waitUpToDate(t, nil)
	e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "n-new", map[string]any{"title": "new"}))
	e.requestSync(t, "events")
	e.waitState(t, agent.StateUpdatesAvailable, before.LastSyncCompleted)
	if resp := e.do(t, http.MethodPost, "/v1/apply", "", &agent.ApplyReport{}); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/apply: %d", resp.StatusCode)
	}

	var all activityResp
	if resp := e.get(t, "/v1/activity", &all); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/activity: %d", resp.StatusCode)
	}
	for i := 1; i < len(all.Activity); i++ {
		if all.Activity[i-1].ID <= all.Activity[i].ID {
			t.Fatalf("activity not newest first: ids %d then %d", all.Activity[i-1].ID, all.Activity[i].ID)
		}
	}
	var got []store.Activity
	var kinds []string
	for _, a := range all.Activity {
		if a.Kind == "sync" || a.Kind == "apply" {
			got = append(got, a)
			kinds = append(kinds, a.Kind+"/"+a.Scope)
		}
	}
	if strings.Join(kinds, ",") != "apply/,sync/events,sync/full" {
		t.Fatalf("activity %s, want apply, the events sync, then the initial full sync (all: %+v)", strings.Join(kinds, ","), all.Activity)
	}
	for _, a := range got {
		if a.Outcome != "ok" || a.Started.IsZero() || a.Finished.Before(a.Started) || a.Detail == nil {
			t.Fatalf("activity entry %+v, want outcome ok with start <= finish and a detail", a)
		}
	}
	apply, sync, initial := got[0], got[1], got[2]
	if apply.Detail["changes"] != float64(1) {
		t.Fatalf("apply detail %v, want changes 1", apply.Detail)
	}
	if sync.Detail["staged"] != true || sync.Detail["updates_available"] != true || sync.Detail["automatic"] != false {
		t.Fatalf("events sync detail %v, want staged, updates available, requested (not automatic)", sync.Detail)
	}
	if initial.Detail["applied"] != float64(3) {
		t.Fatalf("initial sync detail %v, want the 3 server records applied", initial.Detail)
	}
	if apply.Started.Before(sync.Started) || sync.Started.Before(initial.Started) {
		t.Fatalf("activity times out of order: apply %v, sync %v, initial %v", apply.Started, sync.Started, initial.Started)
	}

	var one activityResp
	if resp := e.get(t, "/v1/activity?limit=1", &one); resp.StatusCode != http.StatusOK || len(one.Activity) != 1 || one.Activity[0].ID != all.Activity[0].ID {
		t.Fatalf("GET /v1/activity?limit=1: %d %+v, want only the newest entry %d", resp.StatusCode, one.Activity, all.Activity[0].ID)
	}
	for _, q := range []string{"0", "abc", "-1", "1001"} {
		e.wantError(t, http.MethodGet, "/v1/activity?limit="+q, "", http.StatusBadRequest, "bad_request")
	}
}

// sseLines reads the stream body line by line into a channel, closed when
// the body ends.
// mustOpenStream opens GET base+/v1/stream until ctx ends and returns its
// lines (see sseLines).
func (e *env) mustOpenStream(t *testing.T, ctx context.Context, base string) <-chan string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.send(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return sseLines(ctx, resp)
}

func sseLines(ctx context.Context, resp *http.Response) <-chan string {
	out := make(chan string, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case out <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// nextStatusEvent reads one server-sent event, skipping keep-alive
// comments and write outcome events, and requires it to be "event:
// status" with a JSON status.
func nextStatusEvent(t *testing.T, lines <-chan string, timeout time.Duration) (agent.Status, string) {
	t.Helper()
	deadline := time.After(timeout)
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			return l
		case <-deadline:
			t.Fatal("no status event in time")
		}
		return ""
	}
	l := next()
	for l == "" || strings.HasPrefix(l, ":") || l == "event: write" || strings.HasPrefix(l, "data: {\"seq\":") {
		l = next()
	}
	if l != "event: status" {
		t.Fatalf("stream line %q, want \"event: status\"", l)
	}
	data := next()
	if !strings.HasPrefix(data, "data: ") {
		t.Fatalf("stream line after the event %q, want \"data: {...}\"", data)
	}
	if end := next(); end != "" {
		t.Fatalf("event not ended by a blank line: %q", end)
	}
	payload := strings.TrimPrefix(data, "data: ")
	var st agent.Status
	if err := json.Unmarshal([]byte(payload), &st); err != nil {
		t.Fatalf("status event data %q: %v", payload, err)
	}
	return st, payload
}

func TestHandler_Stream(t *testing.T) {
	e := startLifecycleEnv(t, nil, 0)
	e.waitUpToDate(t, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.send(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /v1/stream: %d %q, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Fatalf("stream Cache-Control %q, want no-cache", cc)
	}
	lines := sseLines(ctx, resp)

	first, last := nextStatusEvent(t, lines, 5*time.Second)
	if first.DeviceID != "tab-lc" || first.State != agent.StateUpToDate || first.LastSyncCompleted == nil || len(first.Channels) != 3 {
		t.Fatalf("first status event %+v, want tab-lc up to date with its channels", first)
	}

	e.requestSync(t, "events")
	var states []string
	deadline := time.Now().Add(15 * time.Second) // bounds each blocking read too
	fstest.Eventually(t, 15*time.Second, func() bool {
		st, payload := nextStatusEvent(t, lines, time.Until(deadline))
		if payload == last {
			t.Fatalf("stream repeated an unchanged status: %s", payload)
		}
		last = payload
		states = append(states, st.State)
		if st.DeviceID != "tab-lc" {
			t.Fatalf("status event for %q", st.DeviceID)
		}
		if st.State == agent.StateFailed {
			t.Fatalf("sync failed: %s", st.LastError)
		}
		return st.LastSyncCompleted != nil && st.LastSyncCompleted.After(*first.LastSyncCompleted)
	}, "a status event of a sync completed after the request; states so far %v", &states)

	// Cancelling the request ends the stream.
	cancel()
	select {
	case <-drain(lines):
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end after the request was cancelled")
	}
	t.Logf("states streamed after the sync request: %v", states)
}

// drain empties lines and reports when it is closed.
func drain(lines <-chan string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for range lines {
		}
		close(done)
	}()
	return done
}

func TestHandler_Settings_RefreshModeOff(t *testing.T) {
	e := startLifecycleEnv(t, nil, 0)
	before := e.waitUpToDate(t, nil)
	if !before.RefreshMode {
		t.Fatalf("refresh mode off by default: %+v", before)
	}
	for _, body := range []string{`{}`, `{"x":1}`, `{"refresh_mode":"no"}`, `{"refresh_mode":false,"x":1}`, `{"refresh_mode":`, `null`} {
		e.wantError(t, http.MethodPost, "/v1/settings", body, http.StatusBadRequest, "bad_request")
	}
	if st := e.status(t); !st.RefreshMode || !e.agent.RefreshMode() {
		t.Fatalf("a refused settings body switched refresh mode off")
	}

	var ok map[string]any
	if resp := e.do(t, http.MethodPost, "/v1/settings", `{"refresh_mode": false}`, &ok); resp.StatusCode != http.StatusOK ||
		ok["refresh_mode"] != false || ok["effective"] != "next sync" {
		t.Fatalf("POST /v1/settings off: %d %v", resp.StatusCode, ok)
	}
	var raw map[string]any
	e.get(t, "/v1/status", &raw)
	if raw["refresh_mode"] != false {
		t.Fatalf("status refresh_mode %v after switching it off", raw["refresh_mode"])
	}

	// Blocking sync: the change is live when the sync completes, without Apply.
	v := e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "n-blk", map[string]any{"title": "blocking"}))
	e.requestSync(t, "events")
	var st agent.Status
	eventually(t, "blocking sync completed", func() (bool, string) {
		st = e.status(t)
		if st.State == agent.StateUpdatesAvailable || st.StagedChanges != 0 || st.UpdatesAvailableSince != nil {
			t.Fatalf("refresh mode off, yet updates were staged: %+v", st)
		}
		if st.State == agent.StateFailed {
			t.Fatalf("sync failed: %s", st.LastError)
		}
		return st.State == agent.StateUpToDate && st.LastSyncCompleted != nil && st.LastSyncCompleted.After(*before.LastSyncCompleted), fmt.Sprintf("%+v", st)
	})
	if r := e.record(t, events.ChannelEvents, "n-blk"); r == nil || r.Version != v || r.Pending || r.Body["title"] != "blocking" {
		t.Fatalf("n-blk after a blocking sync: %s, want version %d live", fmtRecord(r), v)
	}
	if st.RefreshMode || st.LastApplied != nil {
		t.Fatalf("status after the blocking sync: refresh_mode %v, last_applied %v", st.RefreshMode, st.LastApplied)
	}
	e.wantError(t, http.MethodPost, "/v1/apply", "", http.StatusConflict, "nothing_to_apply")

	// Switched back on, the next sync stages again.
	if resp := e.do(t, http.MethodPost, "/v1/settings", `{"refresh_mode": true}`, &ok); resp.StatusCode != http.StatusOK || ok["refresh_mode"] != true {
		t.Fatalf("POST /v1/settings on: %d %v", resp.StatusCode, ok)
	}
	e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "n-ref", map[string]any{"title": "refresh"}))
	e.requestSync(t, "events")
	if st := e.waitState(t, agent.StateUpdatesAvailable, st.LastSyncCompleted); !st.RefreshMode || st.StagedChanges != 1 {
		t.Fatalf("after switching refresh mode back on: %+v", st)
	}
	if r := e.record(t, events.ChannelEvents, "n-ref"); r != nil {
		t.Fatalf("refresh mode back on, yet the change is live before Apply: %s", fmtRecord(r))
	}
}

func TestHandler_SyncReset(t *testing.T) {
	// Autosync every hour: after the write's immediate upload, only Sync
	// Now reads the ingest result.
	e := startLifecycleEnv(t, nil, time.Hour)
	before := e.waitUpToDate(t, nil)
	e.wantError(t, http.MethodPost, "/v1/sync", `{"scope":"events","reset":true}`, http.StatusBadRequest, "bad_request")

	// The server changes srv-1 after the initial sync: in refresh mode a
	// plain sync would only stage it; Sync Now reloads it live.
	v2 := e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "srv-1", map[string]any{"title": "T srv-1 v2"}))
	wr := e.write(t, `{"org_unit":"north","channel":"events","kind":"event","id":"w-1","body":{"title":"written offline"}}`)
	if r := e.record(t, events.ChannelEvents, "w-1"); r == nil || !r.Pending {
		t.Fatalf("w-1 right after the write: %s, want it pending", fmtRecord(r))
	}
	if st := e.status(t); st.PendingWrites != 1 {
		t.Fatalf("pending_writes %d before Sync Now, want 1", st.PendingWrites)
	}
	if n := len(e.broker.DeviceChanges(t, "north")); n != 0 {
		t.Fatalf("the server holds %d device changes before ingest runs", n)
	}

	runIngest(t, e.broker)
	var rep agent.Report
	if resp := e.do(t, http.MethodPost, "/v1/sync", `{"scope":"full","reset":true}`, &rep); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/sync full reset: %d", resp.StatusCode)
	}
	if rep.Scope != agent.ScopeFull || rep.Finished.Before(rep.Started) || rep.Applied != 4 {
		t.Fatalf("reset report %+v, want a full sync that applied the 4 server records", rep)
	}

	ch := e.broker.DeviceChanges(t, "north")
	if len(ch) != 1 || ch[0].RecordID != "w-1" || ch[0].Origin.DeviceID != "tab-lc" || ch[0].Origin.MutationID != wr.MutationID {
		t.Fatalf("device changes on the server after Sync Now: %+v, want w-1 (mutation %s)", ch, wr.MutationID)
	}
	w := e.record(t, events.ChannelEvents, "w-1")
	if w == nil || w.Pending || w.Version == 0 || w.Origin != "tab-lc" || w.Body["title"] != "written offline" {
		t.Fatalf("w-1 after Sync Now: %s, want the server's (accepted, not pending) copy", fmtRecord(w))
	}
	if r := e.record(t, events.ChannelEvents, "srv-1"); r == nil || r.Pending || r.Version != v2 || r.Body["title"] != "T srv-1 v2" {
		t.Fatalf("srv-1 after Sync Now: %s, want the server's version %d live", fmtRecord(r), v2)
	}
	var recs recordsResp
	e.get(t, "/v1/records?channel=events", &recs)
	if ids(recs.Records) != "srv-1,w-1,s-1" {
		t.Fatalf("events after Sync Now: %s", ids(recs.Records))
	}
	st := e.status(t)
	if st.State != agent.StateUpToDate || st.PendingWrites != 0 || st.SyncErrors != 0 || st.OnlineOnly || st.StagedChanges != 0 ||
		st.LastSyncCompleted == nil || !st.LastSyncCompleted.After(*before.LastSyncCompleted) {
		t.Fatalf("status after Sync Now: %+v", st)
	}
	var acts activityResp
	e.get(t, "/v1/activity?limit=1", &acts)
	if len(acts.Activity) != 1 || acts.Activity[0].Kind != "reset" || acts.Activity[0].Outcome != "ok" {
		t.Fatalf("newest activity %+v, want an ok reset", acts.Activity)
	}
}

func TestHandler_SyncReset_RefusedWhenServerDown(t *testing.T) {
	e := startLifecycleEnv(t, nil, 0)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.broker.Server.Close(sctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "agent disconnected", func() (bool, string) {
		st := e.status(t)
		return !st.Connected, fmt.Sprintf("connected %v", st.Connected)
	})
	e.write(t, `{"org_unit":"north","channel":"events","kind":"event","id":"w-off","body":{"title":"offline"}}`)

	// A bounded request: Sync Now must refuse, not wait for the server.
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, e.base+"/v1/sync", strings.NewReader(`{"scope":"full","reset":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.send(req)

	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb localapi.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusConflict || eb.Error.Code != "reset_refused" || eb.Error.Message == "" {
		t.Fatalf("Sync Now with the server down: %d %+v, want 409 reset_refused", resp.StatusCode, eb)
	}

	// Nothing was cleared.
	var recs recordsResp
	e.get(t, "/v1/records?channel=events", &recs)
	if ids(recs.Records) != "srv-1,w-off,s-1" {
		t.Fatalf("events after a refused Sync Now: %s, want srv-1,w-off,s-1", ids(recs.Records))
	}
	if r := e.record(t, events.ChannelEvents, "w-off"); r == nil || !r.Pending {
		t.Fatalf("w-off after a refused Sync Now: %s, want it still pending", fmtRecord(r))
	}
	if r := e.record(t, events.ChannelAdmin, "tenant-set-1"); r == nil {
		t.Fatal("admin data cleared by a refused Sync Now")
	}
	st := e.status(t)
	if st.PendingWrites != 1 || st.OnlineOnly {
		t.Fatalf("status after a refused Sync Now: pending_writes %d, online_only %v", st.PendingWrites, st.OnlineOnly)
	}
	var acts activityResp
	e.get(t, "/v1/activity?limit=1", &acts)
	if len(acts.Activity) != 1 || acts.Activity[0].Kind != "reset" || acts.Activity[0].Outcome != "refused" {
		t.Fatalf("newest activity %+v, want a refused reset", acts.Activity)
	}
}

func TestHandler_SignIn(t *testing.T) {
	e := startLifecycleEnv(t, nil, 0)
	ctx := ctxT(t)
	used := func() time.Time {
		t.Helper()
		v, err := e.agent.DB().Meta(ctx, "last_used_at")
		if err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			t.Fatalf("last_used_at %q: %v", v, err)
		}
		return at
	}
	before := used()
	fstest.Eventually(t, time.Second, func() bool { return time.Now().After(before) }, "the clock to pass last_used_at %v", before)

	for _, body := range []string{`{}`, `{"user":""}`, `{"user":`, `["alice"]`} {
		e.wantError(t, http.MethodPost, "/v1/signin", body, http.StatusBadRequest, "bad_request")
	}
	// A refused sign-in is 401 with its kind (the server's refusals are
	// TestBroker_SignIn's; a user name that is no token is refused here).
	e.wantError(t, http.MethodPost, "/v1/signin", `{"user":"al ice"}`, http.StatusUnauthorized, "login_failed")
	var ok map[string]any
	if resp := e.do(t, http.MethodPost, "/v1/signin", `{"user":"alice"}`, &ok); resp.StatusCode != http.StatusOK || ok["signed_in"] != "alice" {
		t.Fatalf("POST /v1/signin: %d %v, want 200 signed_in alice", resp.StatusCode, ok)
	}
	// A sign-in restarts the retention count.
	if after := used(); !after.After(before) {
		t.Fatalf("last_used_at %v after sign-in, want later than %v", after, before)
	}
}
