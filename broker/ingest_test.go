package broker_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

// healthWatch polls /healthz and /metrics until stopped and keeps what it
// saw of ingest being down.
type healthWatch struct {
	mu         sync.Mutex
	downReason string // first non-200 /healthz reason
	metricDown bool   // fieldsync_ingest_up 0 seen
	stop, done chan struct{}
}

func watchHealth(t *testing.T, base, token string) *healthWatch {
	w := &healthWatch{stop: make(chan struct{}), done: make(chan struct{})}
	c := http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			code, h := getHealth(&c, base)
			down := scrapeHas(&c, base, token, "fieldsync_ingest_up 0\n")
			w.mu.Lock()
			if code != http.StatusOK && code != 0 && w.downReason == "" {
				w.downReason = h.Status + ": " + h.Reason
			}
			w.metricDown = w.metricDown || down
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *healthWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *healthWatch) seen() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.downReason, w.metricDown
}

type healthBody struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
}

func getHealth(c *http.Client, base string) (int, healthBody) {
	var h healthBody
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		return 0, h
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h
}

func scrapeHas(c *http.Client, base, token, line string) bool {
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	return err == nil && strings.Contains(string(text), line)
}

// TestBroker_Ingest_DurableDeleted: an operator deletes ingest's durable.
// /healthz and fieldsync_ingest_up say ingest is down, ingest comes back
// within seconds and an upload published afterwards is applied.
func TestBroker_Ingest_DurableDeleted(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	c := &http.Client{Timeout: 2 * time.Second}
	if code, h := getHealth(c, b.HTTPURL()); code != http.StatusOK || h.Status != "ok" {
		t.Fatalf("healthz after Open: %d %+v", code, h)
	}
	dev := fstest.MustConnectDevice(t, b.ClientURL(), b.Authority(), "tab1", "north")
	log, err := b.Client().MutationLog(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	uploadApplied := func(mut, id string) {
		t.Helper()
		e := fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"n": 1})
		e.Origin = events.Origin{DeviceID: "tab1", MutationID: mut}
		if _, err := dev.PublishUpload(ctxT(t), e); err != nil {
			t.Fatal(err)
		}
		fstest.Eventually(t, 10*time.Second, func() bool {
			r, err := log.Get(ctxT(t), "tab1", mut)
			return err == nil && r != nil && r.Status == events.Accepted
		}, "upload %s accepted", mut)
	}
	uploadApplied("m1", "r1")
	if !scrapeHas(c, b.HTTPURL(), metricsToken(t, b), "fieldsync_ingest_up 1\n") {
		t.Fatal("fieldsync_ingest_up is not 1 while ingest reads")
	}

	watch := watchHealth(t, b.HTTPURL(), metricsToken(t, b))
	js, err := jetstream.New(b.Client().Conn()) // the operator's view
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(ctxT(t), events.UploadStream, natsjs.IngestDurable); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	fstest.Eventually(t, 10*time.Second, func() bool {
		reason, metric := watch.seen()
		return reason != "" && metric
	}, "/healthz and fieldsync_ingest_up report ingest down")
	reason, _ := watch.seen()
	if !strings.Contains(reason, "unavailable: ingest down") || !strings.Contains(reason, "consumer deleted") {
		t.Fatalf("/healthz said %q, want ingest down with the cause", reason)
	}
	fstest.Eventually(t, 10*time.Second, func() bool {
		code, _ := getHealth(c, b.HTTPURL())
		return code == http.StatusOK && scrapeHas(c, b.HTTPURL(), metricsToken(t, b), "fieldsync_ingest_up 1\n")
	}, "/healthz ok and fieldsync_ingest_up 1 again")
	back := time.Since(deleted)
	watch.close()
	t.Logf("ingest reported down (%s), back after %v", reason, back.Round(time.Millisecond))
	if back > 5*time.Second {
		t.Fatalf("ingest back only after %v", back)
	}
	uploadApplied("m2", "r2")
}
