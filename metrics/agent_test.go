package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// scrape returns h's metrics in the text format.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil || rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", rec.Code, err)
	}
	return string(body)
}

// requireLines fails unless every want is a whole line of text.
func requireLines(t *testing.T, text string, want ...string) {
	t.Helper()
	lines := map[string]bool{}
	for _, l := range strings.Split(text, "\n") {
		lines[l] = true
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("metrics lack the line %q", w)
		}
	}
	if t.Failed() {
		t.Fatalf("metrics:\n%s", text)
	}
}

func TestAgent_Handler_ReportsRecordedValues(t *testing.T) {
	outbox := map[string]float64{"queued": 2, "sent": 1, "conflict": 0, "rejected": 3}
	staged := 0.0
	a := NewAgent(func(context.Context) map[string]float64 { return outbox }, func(context.Context) float64 { return staged })
	a.SyncFinished("full", 1500*time.Millisecond, nil)
	a.SyncFinished("full", 200*time.Millisecond, nil)
	a.SyncFinished("events", 45*time.Second, errors.New("offline"))
	a.Applied("events", 120)
	a.Applied("events", 30)
	a.Applied("admin", 7)
	a.Applied("admin", -1) // ignored
	a.Downloaded(4096)
	a.Downloaded(1000)
	a.Downloaded(-5) // ignored
	staged = 42

	requireLines(t, scrape(t, a.Handler()),
		`# TYPE fieldsync_agent_sync_duration_seconds histogram`,
		`fieldsync_agent_sync_duration_seconds_bucket{outcome="ok",scope="full",le="0.1"} 0`,
		`fieldsync_agent_sync_duration_seconds_bucket{outcome="ok",scope="full",le="0.25"} 1`,
		`fieldsync_agent_sync_duration_seconds_bucket{outcome="ok",scope="full",le="1"} 1`,
		`fieldsync_agent_sync_duration_seconds_bucket{outcome="ok",scope="full",le="2.5"} 2`,
		`fieldsync_agent_sync_duration_seconds_bucket{outcome="ok",scope="full",le="+Inf"} 2`,
		`fieldsync_agent_sync_duration_seconds_sum{outcome="ok",scope="full"} 1.7`,
		`fieldsync_agent_sync_duration_seconds_count{outcome="ok",scope="full"} 2`,
		`fieldsync_agent_sync_duration_seconds_bucket{outcome="failed",scope="events",le="30"} 0`,
		`fieldsync_agent_sync_duration_seconds_bucket{outcome="failed",scope="events",le="60"} 1`,
		`fieldsync_agent_sync_duration_seconds_sum{outcome="failed",scope="events"} 45`,
		`fieldsync_agent_sync_duration_seconds_count{outcome="failed",scope="events"} 1`,
		`# TYPE fieldsync_agent_records_applied_total counter`,
		`fieldsync_agent_records_applied_total{channel="events"} 150`,
		`fieldsync_agent_records_applied_total{channel="admin"} 7`,
		`# TYPE fieldsync_agent_downloaded_bytes_total counter`,
		`fieldsync_agent_downloaded_bytes_total 5096`,
		`# TYPE fieldsync_agent_outbox_depth gauge`,
		`fieldsync_agent_outbox_depth{state="queued"} 2`,
		`fieldsync_agent_outbox_depth{state="sent"} 1`,
		`fieldsync_agent_outbox_depth{state="conflict"} 0`,
		`fieldsync_agent_outbox_depth{state="rejected"} 3`,
		`# TYPE fieldsync_agent_staged_changes gauge`,
		`fieldsync_agent_staged_changes 42`,
	)
}

func TestAgent_Handler_ReadsGaugesAtScrapeTime(t *testing.T) {
	outbox := map[string]float64{"queued": 1}
	staged := 5.0
	a := NewAgent(func(context.Context) map[string]float64 { return outbox }, func(context.Context) float64 { return staged })
	requireLines(t, scrape(t, a.Handler()), `fieldsync_agent_outbox_depth{state="queued"} 1`, `fieldsync_agent_staged_changes 5`,
		`fieldsync_agent_downloaded_bytes_total 0`)
	outbox, staged = map[string]float64{"queued": 0, "sent": 1}, 0
	text := scrape(t, a.Handler())
	requireLines(t, text, `fieldsync_agent_outbox_depth{state="queued"} 0`, `fieldsync_agent_outbox_depth{state="sent"} 1`,
		`fieldsync_agent_staged_changes 0`)
	if strings.Contains(text, "fieldsync_agent_sync_duration_seconds_count") || strings.Contains(text, "fieldsync_agent_records_applied_total{") {
		t.Fatalf("no sync observed and nothing applied, yet:\n%s", text)
	}
	outbox = nil // the store could not be read: no samples, no error
	if text := scrape(t, a.Handler()); strings.Contains(text, "fieldsync_agent_outbox_depth{") {
		t.Fatalf("an unreadable outbox must report no samples:\n%s", text)
	}
}
