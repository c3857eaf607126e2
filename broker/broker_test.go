package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/publish"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testConfig(dir string, units ...string) broker.Config {
	cfg := broker.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", OrgUnits: units}
	cfg.NATS.Port = -1
	return cfg
}

// closed records the brokers a test closed itself: Broker.Close must not
// be called twice (a second call blocks forever, see TestBroker_Close_Twice).
var closed sync.Map

// openBroker opens a broker and closes it when the test ends (unless the
// test closed it already with closeBroker).
func openBroker(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Open(ctxT(t), cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, done := closed.LoadOrStore(b, true); done {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Close(ctx)
	})
	return b
}

// closeBroker closes b. It fails the test on any error except the known
// one of TestBroker_Close_Clean (Close reports the ingester's
// context.Canceled when the broker is closed soon after Open).
func closeBroker(t *testing.T, b *broker.Broker) {
	t.Helper()
	if _, done := closed.LoadOrStore(b, true); done {
		t.Fatal("broker closed twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("close: %v", err)
	}
}

// postPublish posts body to the HTTP publish API with an integration's
// bearer token.
func postPublish(t *testing.T, b *broker.Broker, token, body string) (int, publish.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.HTTPURL()+"/v1/publish", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q, want application/json", ct)
	}
	var r publish.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	return resp.StatusCode, r
}

func reqJSON(t *testing.T, r publish.Request) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBroker_Open(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north", "south"))

	resp, err := http.Get(b.HTTPURL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		Status   string   `json:"status"`
		OrgUnits []string `json:"org_units"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || h.Status != "ok" {
		t.Fatalf("healthz: %d %+v, want 200 ok", resp.StatusCode, h)
	}
	if strings.Join(h.OrgUnits, ",") != "north,south" {
		t.Fatalf("healthz org units %v", h.OrgUnits)
	}

	// Every configured unit and the tenant-wide data have a stream.
	for _, u := range []string{"", "north", "south"} {
		st, err := b.Client().UnitState(ctxT(t), u)
		if err != nil {
			t.Fatalf("unit %q: %v", u, err)
		}
		if want, _ := events.OrgStream(u); st.Name != want || st.Msgs != 0 {
			t.Fatalf("unit %q: state %+v", u, st)
		}
	}
	if _, err := b.Client().UnitState(ctxT(t), "east"); err == nil {
		t.Fatal("unconfigured unit has a stream")
	}

	// Clients reach the broker over TCP at ClientURL, with credentials.
	nc, err := nats.Connect(b.ClientURL(), fstest.ToolCreds(t, b.Authority()))
	if err != nil {
		t.Fatalf("connect %s: %v", b.ClientURL(), err)
	}
	defer nc.Close()
	if _, err := publish.NewClient(nc).Publish(ctxT(t), publish.Request{OrgUnit: "south", Channel: "documents",
		Kind: "document", RecordID: "d1", Body: map[string]any{"title": "manual"}}); err != nil {
		t.Fatalf("publish over NATS: %v", err)
	}
}

func TestBroker_Open_InvalidConfig(t *testing.T) {
	cfg := testConfig(t.TempDir(), "north", "bad.unit")
	if b, err := broker.Open(ctxT(t), cfg, quietLog()); err == nil {
		closeBroker(t, b)
		t.Fatal("Open accepted org unit bad.unit")
	}
}

func TestBroker_Open_HTTPPublish(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	// west is one of the integration's units, but the broker has no stream for it.
	tok := fstest.MustIntegrationToken(t, b.Authority(), "crm", "north", "west")
	good := publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1", Body: map[string]any{"title": "t", "n": 3}}

	code, resp := postPublish(t, b, tok, reqJSON(t, good))
	if code != http.StatusOK || resp.Error != nil || resp.Version == 0 || resp.EventID == "" || resp.Stream != "FS_ORG_north" {
		t.Fatalf("publish: %d %+v", code, resp)
	}
	v, err := b.Client().Publisher().Version(ctxT(t), events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r1"})
	if err != nil || v != resp.Version {
		t.Fatalf("stored version %d (%v), want %d", v, err, resp.Version)
	}

	stale := good
	stale.ExpectedVersion = new(uint64) // 0: must not exist, but it does
	code, cresp := postPublish(t, b, tok, reqJSON(t, stale))
	if code != http.StatusConflict || cresp.Error == nil || cresp.Error.Code != publish.CodeConflict {
		t.Fatalf("conflict: %d %+v, want 409 conflict", code, cresp)
	}
	if cresp.Error.CurrentVersion == nil || *cresp.Error.CurrentVersion != resp.Version {
		t.Fatalf("conflict current_version %v, want %d", cresp.Error.CurrentVersion, resp.Version)
	}

	bad := good
	bad.Channel = "gossip"
	if code, r := postPublish(t, b, tok, reqJSON(t, bad)); code != http.StatusBadRequest || r.Error == nil || r.Error.Code != publish.CodeInvalid {
		t.Fatalf("bad channel: %d %+v, want 400 invalid", code, r)
	}
	if code, r := postPublish(t, b, tok, `{"org_unit":"north","channel":"events","kind":"event","record_id":"r2","body":{},"extra":1}`); code != http.StatusBadRequest || r.Error == nil || r.Error.Code != publish.CodeInvalid {
		t.Fatalf("unknown field: %d %+v, want 400 invalid", code, r)
	}
	if code, r := postPublish(t, b, tok, `not json`); code != http.StatusBadRequest || r.Error == nil || r.Error.Code != publish.CodeInvalid {
		t.Fatalf("malformed JSON: %d %+v, want 400 invalid", code, r)
	}

	unknown := good
	unknown.OrgUnit = "west"
	if code, r := postPublish(t, b, tok, reqJSON(t, unknown)); code != http.StatusNotFound || r.Error == nil || r.Error.Code != publish.CodeUnknownUnit {
		t.Fatalf("unknown unit: %d %+v, want 404 unknown_unit", code, r)
	}

	st, err := b.Client().UnitState(ctxT(t), "north")
	if err != nil || st.Msgs != 1 {
		t.Fatalf("stream holds %+v (%v), want only the one accepted change", st, err)
	}

	// Only POST publishes.
	get, err := http.Get(b.HTTPURL() + "/v1/publish")
	if err != nil {
		t.Fatal(err)
	}
	get.Body.Close()
	if get.StatusCode == http.StatusOK {
		t.Fatal("GET /v1/publish answered 200")
	}
}

func TestBroker_Open_SameDataDir(t *testing.T) {
	dir := t.TempDir()
	b := openBroker(t, testConfig(dir, "north"))
	addr := events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r1"}
	pub := b.Client().Publisher()
	e := &events.Envelope{EventID: "e1", OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r1",
		Op: events.OpDelete, SchemaVersion: events.SchemaVersion, Timestamp: time.Now().UTC()}
	ack, err := pub.Publish(ctxT(t), e, natsjs.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	closeBroker(t, b)

	// Same data dir, same units: provisioning again changes nothing.
	b2 := openBroker(t, testConfig(dir, "north"))
	st, err := b2.Client().UnitState(ctxT(t), "north")
	if err != nil {
		t.Fatal(err)
	}
	if st.Msgs != 1 || st.LastSeq != ack.Version {
		t.Fatalf("after reopen: %+v, want the 1 message at seq %d", st, ack.Version)
	}
	v, err := b2.Client().Publisher().Version(ctxT(t), addr)
	if err != nil || v != ack.Version {
		t.Fatalf("version after reopen %d (%v), want %d", v, err, ack.Version)
	}
	// The record's version survives: a change based on it is accepted.
	e2 := *e
	e2.EventID = "e2"
	exp := ack.Version
	ack2, err := b2.Client().Publisher().Publish(ctxT(t), &e2, natsjs.PublishOptions{ExpectedVersion: &exp})
	if err != nil || ack2.Version != ack.Version+1 {
		t.Fatalf("publish at version %d after reopen: %+v %v", exp, ack2, err)
	}
	closeBroker(t, b2)

	// Reopen with one more unit: the new stream appears, the old keeps its data.
	b3 := openBroker(t, testConfig(dir, "north", "south"))
	st, err = b3.Client().UnitState(ctxT(t), "north")
	if err != nil || st.Msgs != 2 {
		t.Fatalf("north after third open: %+v %v", st, err)
	}
	if st, err := b3.Client().UnitState(ctxT(t), "south"); err != nil || st.Msgs != 0 {
		t.Fatalf("south after third open: %+v %v", st, err)
	}
}

func TestBroker_Close(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	url := b.HTTPURL()
	closeBroker(t, b)
	c := http.Client{Timeout: 2 * time.Second}
	if resp, err := c.Post(url+"/v1/publish", "application/json", bytes.NewReader([]byte(`{}`))); err == nil {
		resp.Body.Close()
		t.Fatalf("HTTP still served after Close: %d", resp.StatusCode)
	}
}

func TestBroker_Close_Twice(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	closeBroker(t, b)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		done <- b.Close(ctx)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("second Close did not return within 5s")
	}
}

func TestBroker_Close_Clean(t *testing.T) {
	b, err := broker.Open(ctxT(t), testConfig(t.TempDir(), "north"), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close of a healthy broker: %v", err)
	}
}

func testLog() *slog.Logger {
	if os.Getenv("FS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return quietLog()
}

// TestBroker_Open_ClusterNeedsKeys: a cluster node never creates the
// operator itself (nodes starting together would each make one); without
// the keys it says how to make them.
func TestBroker_Open_ClusterNeedsKeys(t *testing.T) {
	cfg := testConfig(t.TempDir(), "north")
	cfg.ServerName = "n1"
	cfg.Cluster = broker.ClusterConfig{Routes: []string{"nats-route://127.0.0.1:1"}, Listen: "127.0.0.1:0"}
	_, err := broker.Open(ctxT(t), cfg, quietLog())
	if err == nil || !strings.Contains(err.Error(), "broker-embed init") {
		t.Fatalf("cluster node without keys: %v, want an error naming broker-embed init", err)
	}
	if _, serr := os.Stat(filepath.Join(cfg.DataDir, "auth", "operator.nk")); serr == nil {
		t.Fatal("the node created an operator key")
	}
	// Keys from a build before route secrets: the node names init again.
	if _, err := natsauth.Open(cfg.AuthDir()); err != nil {
		t.Fatal(err)
	}
	if _, err := broker.Open(ctxT(t), cfg, quietLog()); !errors.Is(err, natsauth.ErrNoRouteSecret) || !strings.Contains(err.Error(), "broker-embed init") {
		t.Fatalf("cluster node without a route secret: %v, want ErrNoRouteSecret naming broker-embed init", err)
	}
	cfg.ServerName = ""
	if _, err := broker.Open(ctxT(t), cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "server_name") {
		t.Fatalf("cluster node without a name: %v", err)
	}
}

// TestBroker_MaxConsumersCoversEveryStream: streams.max_consumers bounds
// the streams that set no limit of their own too (the results stream, where
// every syncing device holds a durable): nats-server's default of 1,000
// would refuse the 1,001st device. Here with a limit of 5 for speed.
func TestBroker_MaxConsumersCoversEveryStream(t *testing.T) {
	cfg := testConfig(t.TempDir(), "north")
	cfg.Streams.MaxConsumers = 5
	b := openBroker(t, cfg)
	ctx := ctxT(t)
	open := func(device string) error {
		spec, err := natsjs.ResultsCursorSpec(device, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, err := b.Client().OpenCursor(ctx, spec)
		if err == nil {
			c.Close()
		}
		return err
	}
	for i := range 5 {
		if err := open(fmt.Sprintf("d%d", i)); err != nil {
			t.Fatalf("results durable %d of 5: %v", i+1, err)
		}
	}
	if err := open("d5"); err == nil || !strings.Contains(err.Error(), "maximum consumers") {
		t.Fatalf("6th results durable with max_consumers 5: %v, want refused", err)
	}
	if got := natsjs.DefaultStreamPolicy().MaxConsumers; got < 40000 {
		t.Fatalf("default max_consumers %d: 10,000 devices syncing at once need 40,000 on a unit holding them all", got)
	}
}
