package broker_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
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
	if want := []string{"e0", "e1", "e2", "e3", "e4"}; len(first) != 3 || len(ids) != 5 || !slices.Equal(ids, want) {
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

// TestBroker_Auth_TailReadsOnly: `broker-embed tail`'s identity follows a
// stream but publishes nothing: no changes, uploads, results or stream
// changes.
func TestBroker_Auth_TailReadsOnly(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	userJWT, seed, err := b.Authority().Component(natsauth.RoleTail)
	if err != nil {
		t.Fatal(err)
	}
	p := connectProbe(t, b.ClientURL(), "", "_INBOX", nats.UserJWTAndSeed(userJWT, seed))
	for _, subj := range []string{"fs.org.north.events.event.x", "fs.tenant.admin.setting.x", "fs.up.tab1.north.events.event.x",
		"fs.res.tab1.m1", "fs.api.publish", "$JS.API.STREAM.PURGE.FS_ORG_north", "$JS.API.STREAM.DELETE.FS_ORG_north"} {
		p.denyPub(t, subj)
	}
	c, err := natsjs.NewClient(p.nc)
	if err != nil {
		t.Fatal(err)
	}
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := errors.New("got it")
	err = c.Tail(ctx, natsjs.TailSpec{Unit: "north", Since: time.Now().Add(-time.Minute)}, func(ch natsjs.Change) error {
		if ch.Err != nil || ch.Version != v || ch.Envelope.RecordID != "e1" {
			t.Errorf("tail read %+v, want e1 at version %d", ch, v)
		}
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("tail as the tail identity: %v", err)
	}
}

// TestBroker_Auth_IntegrationDenied: an integration's credentials cannot
// publish anywhere (changes, uploads, results, the publish API, stream
// changes) nor read uploads, results or another integration's consumers.
func TestBroker_Auth_IntegrationDenied(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north", "south"))
	in, _ := events.IntegrationInboxPrefix("crm")
	p := connectProbe(t, b.ClientURL(), fstest.MustIntegrationCreds(t, b.Authority(), "crm", "north"), in)
	for _, subj := range []string{
		"fs.org.north.events.event.x", "fs.tenant.admin.setting.x", "fs.up.crm.north.events.event.x", "fs.res.tab1.m1",
		"fs.api.publish", "fs.api.hello",
		"$JS.API.CONSUMER.CREATE.FS_UPLOADS.fsint_crm_events.fs.up.>", "$JS.API.DIRECT.GET.FS_UPLOADS.fs.up.tab1",
		"$JS.API.CONSUMER.CREATE.FS_RESULTS.fsint_crm_events.fs.res.>", "$JS.API.DIRECT.GET.FS_RESULTS.fs.res.tab1.m1",
		"$JS.API.CONSUMER.CREATE.FS_ORG_south.fsint_crm_events.fs.org.south.>",
		"$JS.API.CONSUMER.CREATE.FS_ORG_north.fsint_erp_events.fs.org.north.>",
		"$JS.API.CONSUMER.LIST.FS_ORG_north", "$JS.API.STREAM.PURGE.FS_ORG_north", "$JS.API.STREAM.DELETE.FS_ORG_north",
	} {
		p.denyPub(t, subj)
	}
	p.denySub(t, "fs.up.>")
	p.denySub(t, "fs.res.>")
}
