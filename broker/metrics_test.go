package broker_test

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// metricsToken reads the token GET /metrics requires from the broker's
// data dir.
func metricsToken(t *testing.T, b *broker.Broker) string {
	t.Helper()
	tok, err := os.ReadFile(b.MetricsTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(tok))
}

func scrape(t *testing.T, b *broker.Broker) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.HTTPURL()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+metricsToken(t, b))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(text)
}

func TestBroker_Metrics(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	tok := fstest.MustIntegrationToken(t, b.Authority(), "crm", "north")
	if code, _ := postPublish(t, b, tok, `{"org_unit":"north","channel":"events","kind":"event","record_id":"e1","body":{"x":1}}`); code != http.StatusOK {
		t.Fatalf("publish: %d", code)
	}
	if code, _ := postPublish(t, b, tok, `{"org_unit":"north","channel":"events","kind":"event","record_id":"e1","body":{"x":2},"expected_version":99}`); code != http.StatusConflict {
		t.Fatalf("stale publish: %d", code)
	}
	dev := fstest.MustConnectDevice(t, b.ClientURL(), b.Authority(), "tab1", "north")
	e := fstest.Change(t, "north", events.ChannelEvents, "action", "a1", map[string]any{"y": 1})
	e.Origin = events.Origin{DeviceID: "tab1", MutationID: "m1"}
	if _, err := dev.PublishUpload(ctxT(t), e); err != nil {
		t.Fatal(err)
	}
	// A reader of north that has received nothing lags by the 2 messages.
	js, err := jetstream.New(b.Client().Conn()) // the operator's view
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctxT(t), "FS_ORG_north", jetstream.ConsumerConfig{Durable: "lag-probe", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	want := []string{`fieldsync_stream_consumer_lag{stream="FS_ORG_north"} 2`, `fieldsync_published_total{outcome="ok"} 1`, `fieldsync_published_total{outcome="conflict"} 1`,
		`fieldsync_ingested_total{status="accepted"} 1`, `fieldsync_stream_messages{stream="FS_ORG_north"} 2`,
		`fieldsync_stream_consumers{stream="FS_UPLOADS"} 1`, `fieldsync_ingest_pending 0`, "fieldsync_ingest_up 1"}
	var text, missing string
	fstest.Eventually(t, 10*time.Second, func() bool {
		text, missing = scrape(t, b), ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
				return false
			}
		}
		return true
	}, "/metrics lacks %s:\n%s", lazy(func() string { return missing }), lazy(func() string { return text }))
}

// lazy is formatted when printed: a failure message shows the last state.
type lazy func() string

func (f lazy) String() string { return f() }
