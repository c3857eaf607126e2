package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// scrapeMetrics returns the samples a.Metrics serves, by series (name and
// labels as printed, e.g. `x_total{channel="events"}`).
func scrapeMetrics(t *testing.T, a *Agent) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	a.Metrics().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil || rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", rec.Code, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// requireSamples fails unless m holds every want series with its value.
func requireSamples(t *testing.T, m map[string]float64, want map[string]float64) {
	t.Helper()
	for series, v := range want {
		if got, ok := m[series]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// runAgent opens an agent for cfg, runs it until the test ends, and returns
// it; before is called between Open and Run.
func runAgent(t *testing.T, cfg Config, before func(*Agent)) *Agent {
	t.Helper()
	a, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		a.Close()
	})
	return a
}

// waitStatus polls a's status until ok accepts it.
func waitStatus(t *testing.T, a *Agent, what string, ok func(Status) bool) Status {
	t.Helper()
	var st Status
	fstest.Eventually(t, 30*time.Second, func() bool {
		var err error
		if st, err = a.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		return ok(st)
	}, "waiting for %s: last status %+v", what, &st)
	return st
}

// syncedAfter accepts a status whose last completed sync is after t.
func syncedAfter(t time.Time) func(Status) bool {
	return func(st Status) bool {
		return st.State != StateInProgress && st.LastSyncCompleted != nil && st.LastSyncCompleted.After(t)
	}
}

func TestAgent_Metrics_ReportsSync(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	for i := 0; i < 6; i++ {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%d", i), map[string]any{"i": i}))
	}
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelAdmin, "setting", "s1", map[string]any{"x": 1}))
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelAdmin, "location", "l1", map[string]any{"x": 2}))
	b.MustPublish(t, fstest.Change(t, "", events.ChannelAdmin, "org_unit", "north", map[string]any{"name": "North"}))
	cfg := refreshConfig("tab1", "north")
	cfg.DataDir, cfg.BrokerURL = t.TempDir(), b.URL()
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)

	a := runAgent(t, cfg, func(a *Agent) {
		// A write made before the agent connects waits in the outbox.
		if _, err := a.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "action", RecordID: "local1", Body: map[string]any{"y": 1}}); err != nil {
			t.Fatal(err)
		}
		m := scrapeMetrics(t, a)
		requireSamples(t, m, map[string]float64{`fieldsync_agent_outbox_depth{state="queued"}`: 1, `fieldsync_agent_outbox_depth{state="sent"}`: 0,
			`fieldsync_agent_downloaded_bytes_total`: 0, `fieldsync_agent_staged_changes`: 0})
		if _, ok := m[`fieldsync_agent_sync_duration_seconds_count{outcome="ok",scope="full"}`]; ok {
			t.Fatal("a sync duration observed before any sync")
		}
	})
	waitStatus(t, a, "the initial sync", syncedAfter(time.Time{}))
	m := scrapeMetrics(t, a)
	requireSamples(t, m, map[string]float64{
		`fieldsync_agent_records_applied_total{channel="events"}`: 6,
		`fieldsync_agent_records_applied_total{channel="admin"}`:  3, // two of north, one tenant-wide
		`fieldsync_agent_outbox_depth{state="queued"}`:            0, // uploaded by the sync; no ingest runs,
		`fieldsync_agent_outbox_depth{state="sent"}`:              1, // so it stays unconfirmed
		`fieldsync_agent_staged_changes`:                          0, // the initial load goes live at once
	})
	if n := m[`fieldsync_agent_sync_duration_seconds_count{outcome="ok",scope="full"}`]; n < 1 {
		t.Fatalf("full sync observations with outcome ok: %v, want at least 1", n)
	}
	if s := m[`fieldsync_agent_sync_duration_seconds_sum{outcome="ok",scope="full"}`]; s <= 0 {
		t.Fatalf("full sync duration sum %v, want > 0", s)
	}
	first := m[`fieldsync_agent_downloaded_bytes_total`]
	if first <= 0 {
		t.Fatalf("downloaded bytes %v after downloading 9 changes", first)
	}

	// A delta sync in refresh mode stages its changes until Apply.
	before := time.Now()
	for i := 0; i < 4; i++ {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%d", i), map[string]any{"i": i, "rev": 2}))
	}
	if err := a.RequestSync(ScopeEvents); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "the events sync", syncedAfter(before))
	m = scrapeMetrics(t, a)
	requireSamples(t, m, map[string]float64{
		`fieldsync_agent_records_applied_total{channel="events"}`:                  10,
		`fieldsync_agent_records_applied_total{channel="admin"}`:                   3,
		`fieldsync_agent_staged_changes`:                                           4,
		`fieldsync_agent_sync_duration_seconds_count{outcome="ok",scope="events"}`: 1,
	})
	if got := m[`fieldsync_agent_downloaded_bytes_total`]; got <= first {
		t.Fatalf("downloaded bytes %v after the delta, want more than %v", got, first)
	}
	if _, err := a.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	requireSamples(t, scrapeMetrics(t, a), map[string]float64{`fieldsync_agent_staged_changes`: 0})
}

func TestAgent_Metrics_FailedSyncWhileOffline(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0") // a port no broker listens on
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := testConfig("tab1", "north")
	cfg.DataDir, cfg.BrokerURL = t.TempDir(), "nats://"+addr
	a := runAgent(t, cfg, nil)
	waitStatus(t, a, "the offline sync to fail", func(st Status) bool { return st.State == StateFailed })
	if _, err := a.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "action", RecordID: "offline1", Body: map[string]any{"y": 1}}); err != nil {
		t.Fatal(err)
	}
	m := scrapeMetrics(t, a)
	requireSamples(t, m, map[string]float64{
		`fieldsync_agent_sync_duration_seconds_count{outcome="failed",scope="full"}`: 1,
		`fieldsync_agent_outbox_depth{state="queued"}`:                               1,
		`fieldsync_agent_downloaded_bytes_total`:                                     0,
	})
	if _, ok := m[`fieldsync_agent_sync_duration_seconds_count{outcome="ok",scope="full"}`]; ok {
		t.Fatal("an offline sync counted as ok")
	}
}

func TestAgent_Metrics_SyncNowObservesReload(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	for i := 0; i < 3; i++ {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("e%d", i), map[string]any{"i": i}))
	}
	cfg := testConfig("tab1", "north")
	cfg.DataDir, cfg.BrokerURL = t.TempDir(), b.URL()
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	a := runAgent(t, cfg, nil)
	waitStatus(t, a, "the initial sync", syncedAfter(time.Time{}))
	if _, err := a.SyncNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	requireSamples(t, scrapeMetrics(t, a), map[string]float64{
		`fieldsync_agent_sync_duration_seconds_count{outcome="ok",scope="full"}`: 2, // the initial sync and Sync Now
		`fieldsync_agent_records_applied_total{channel="events"}`:                6, // loaded twice
	})
}
