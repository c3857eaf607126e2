package broker_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// TestBroker_FeedContract: an integration written from docs/change-feed.md
// with a plain NATS client and a generic msgpack decoder (no fieldsync
// code) creates its durable, reads changes in stream order, acknowledges
// them, and after reconnecting continues exactly after the last one it
// acknowledged. It may not name a consumer of its own choosing.
func TestBroker_FeedContract(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	creds := fstest.MustIntegrationCreds(t, b.Authority(), "reporting", "north")
	in, _ := events.IntegrationInboxPrefix("reporting")
	for i := range 5 {
		publishChange(t, b, "north", events.ChannelEvents, "event", "e"+string(rune('0'+i)))
	}
	read := func(n int) []map[string]any {
		t.Helper()
		p := connectProbe(t, b.ClientURL(), creds, in)
		defer p.nc.Close()
		js, _ := jetstream.New(p.nc)
		cons, err := js.CreateOrUpdateConsumer(ctx, "FS_ORG_north", jetstream.ConsumerConfig{Durable: "fsint_reporting_events",
			AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "fs.org.north.events.>", DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Fatalf("create the durable as the contract says: %v", err)
		}
		batch, err := cons.FetchNoWait(n) // all five are stored already
		if err != nil {
			t.Fatal(err)
		}
		var out []map[string]any
		for m := range batch.Messages() {
			var e map[string]any
			if err := msgpack.Unmarshal(m.Data(), &e); err != nil {
				t.Fatal(err)
			}
			ts, okTS := asInt(e["ts"])
			v, okV := asInt(e["v"])
			if !okTS || ts < time.Now().Add(-time.Minute).UnixNano() || !okV || v != 1 || e["op"] != "upsert" || e["org"] != "north" || e["id"] != m.Headers().Get("Nats-Msg-Id") {
				t.Fatalf("envelope %v does not read as the contract says", e)
			}
			if _, ok := e["body"].(map[string]any); !ok {
				t.Fatalf("body %T, want a map with string keys", e["body"])
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("acknowledge: %v", err)
			}
			out = append(out, e)
		}
		return out
	}
	first := read(3)
	rest := read(10)
	var ids []string
	for _, e := range append(first, rest...) {
		ids = append(ids, e["rid"].(string))
	}
	if want := []string{"e0", "e1", "e2", "e3", "e4"}; len(first) != 3 || len(ids) != 5 || !equalStrings(ids, want) {
		t.Fatalf("read %v then resumed with the rest, all %v; want %v: in order, no gap, no duplicate", first, ids, want)
	}

	p := connectProbe(t, b.ClientURL(), creds, in)
	p.denyPub(t, "$JS.API.CONSUMER.CREATE.FS_ORG_north.mine.fs.org.north.>")
}

// asInt reads any msgpack integer (a generic decoder picks the smallest
// Go type that holds the encoded width).
func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		return int64(n), true
	}
	return 0, false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
