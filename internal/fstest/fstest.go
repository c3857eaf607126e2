// Package fstest holds test helpers shared by fieldsync's packages: a real
// embedded broker in a temporary directory and envelope builders. Nothing
// here is mocked. Output collects and waits on what a component prints.
package fstest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
)

// Broker is an embedded nats-server with fieldsync's streams provisioned.
type Broker struct {
	Server *natsserver.Server
	Client *natsjs.Client
	Dir    string
	// Hello answers the agents' version check; unsubscribe it to answer
	// differently.
	Hello *nats.Subscription
}

// MustStartBroker starts a JetStream server on a random loopback port in a
// temporary directory, provisions streams for units and stops it when the
// test ends.
func MustStartBroker(tb testing.TB, units ...string) *Broker {
	tb.Helper()
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := natsserver.Start(ctx, natsserver.Config{Name: "test", Port: -1, StoreDir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := srv.Connect("fstest")
	if err != nil {
		tb.Fatal(err)
	}
	c, err := natsjs.NewClient(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Provision(ctx, units, natsjs.StreamPolicy{}); err != nil {
		tb.Fatal(err)
	}
	if err := c.ProvisionIngest(ctx, natsjs.IngestPolicy{}); err != nil {
		tb.Fatal(err)
	}
	hello, err := natsjs.ServeHello(nc, events.LocalHello("broker"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return &Broker{Server: srv, Client: c, Dir: dir, Hello: hello}
}

// URL is the broker's client URL.
func (b *Broker) URL() string { return b.Server.ClientURL() }

// Body encodes m as a msgpack map.
func Body(tb testing.TB, m map[string]any) []byte {
	tb.Helper()
	b, err := msgpack.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

var seq atomic.Int64

// Change returns a server-side envelope for (unit, ch, kind, id); a nil body
// makes it a delete.
func Change(tb testing.TB, unit string, ch events.Channel, kind, id string, body map[string]any) *events.Envelope {
	tb.Helper()
	n := seq.Add(1)
	e := &events.Envelope{EventID: fmt.Sprintf("ev-%d-%d", time.Now().UnixNano(), n), OrgUnit: unit, Channel: ch, Kind: kind,
		RecordID: id, Op: events.OpDelete, SchemaVersion: events.SchemaVersion, Timestamp: time.Now().UTC()}
	if body != nil {
		e.Op, e.Body = events.OpUpsert, Body(tb, body)
	}
	return e
}

// MustPublish publishes e and returns its version.
func (b *Broker) MustPublish(tb testing.TB, e *events.Envelope) uint64 {
	tb.Helper()
	ack, err := b.Client.Publisher().Publish(context.Background(), e, natsjs.PublishOptions{})
	if err != nil {
		tb.Fatalf("publish %s/%s: %v", e.Kind, e.RecordID, err)
	}
	return ack.Version
}

// DeviceChanges returns the device-made changes in unit's stream, in
// stream order.
func (b *Broker) DeviceChanges(t testing.TB, unit string) []*events.Envelope {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.New(b.Client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	name, _ := events.OrgStream(unit)
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*events.Envelope
	left := int(info.NumPending)
	for left > 0 {
		batch, err := cons.Fetch(min(left, 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			left--
			e, err := events.Decode(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			if e.Origin.DeviceID != "" {
				out = append(out, e)
			}
		}
	}
	return out
}
