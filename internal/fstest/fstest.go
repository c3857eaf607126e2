// Package fstest holds test helpers shared by fieldsync's packages: a real
// embedded broker in a temporary directory, with NATS decentralized auth
// on and credentials issued as an operator would, and envelope builders.
// Nothing here is mocked. Output collects and waits on what a component
// prints.
package fstest

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
)

// Broker is an embedded nats-server with fieldsync's streams provisioned,
// in operator mode: every client needs credentials from Auth.
type Broker struct {
	Server *natsserver.Server
	// Client is the server side's own connection (the broker identity,
	// [natsauth.RoleBroker]): it publishes server changes and results.
	// Device code under test connects with [Broker.ConnectDevice].
	Client *natsjs.Client
	// Auth is the operator's authority: it issues device, integration and
	// component credentials for this broker.
	Auth *natsauth.Authority
	Dir  string
	// Hello answers the agents' version check; unsubscribe it to answer
	// differently.
	Hello *nats.Subscription

	cfg    natsserver.Config
	mu     sync.Mutex
	issued map[string]issued // device -> its credentials
}

type issued struct {
	path  string
	units []string
}

// MustStartBroker starts a JetStream server on a random loopback port in a
// temporary directory, with auth on (an operator, the tenant account, the
// broker identity for [Broker.Client]), provisions streams for units and
// stops it when the test ends.
func MustStartBroker(tb testing.TB, units ...string) *Broker {
	tb.Helper()
	dir := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	auth, err := natsauth.Open(filepath.Join(dir, "auth"))
	if err != nil {
		tb.Fatal(err)
	}
	op := &natsserver.OperatorAuth{OperatorJWT: auth.OperatorJWT(), SystemAccount: auth.SystemAccount(), Accounts: auth.Accounts()}
	cfg := natsserver.Config{Name: "test", Port: -1, StoreDir: filepath.Join(dir, "js"), Operator: op}
	srv, err := natsserver.Start(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	b := &Broker{Server: srv, Auth: auth, Dir: dir, cfg: cfg, issued: map[string]issued{}}
	nc, err := srv.Connect("fstest", b.ComponentOption(tb, natsauth.RoleBroker))
	if err != nil {
		tb.Fatal(err)
	}
	if b.Client, err = natsjs.NewClient(nc); err != nil {
		tb.Fatal(err)
	}
	if err := b.Client.Provision(ctx, units, natsjs.StreamPolicy{}); err != nil {
		tb.Fatal(err)
	}
	if err := b.Client.ProvisionIngest(ctx, natsjs.IngestPolicy{}); err != nil {
		tb.Fatal(err)
	}
	if b.Hello, err = natsjs.ServeHello(nc, events.LocalHello("broker")); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return b
}

// Restart stops the server and starts it again on the same port, store
// and accounts, as a broker restart does; clients over the network
// reconnect. [Broker.Client] (in-process) does not come back.
func (b *Broker) Restart(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u, err := url.Parse(b.URL())
	if err != nil {
		tb.Fatal(err)
	}
	cfg := b.cfg
	if cfg.Port, err = strconv.Atoi(u.Port()); err != nil {
		tb.Fatal(err)
	}
	if err := b.Server.Close(ctx); err != nil {
		tb.Fatal(err)
	}
	if b.Server, err = natsserver.Start(ctx, cfg); err != nil {
		tb.Fatalf("restart on port %d: %v", cfg.Port, err)
	}
	srv := b.Server
	tb.Cleanup(func() { srv.Close(context.Background()) })
}

// DeviceCreds returns the path of device's credentials file, carrying
// units, issuing them at the first call as `broker-embed device add`
// would. A later call with other units re-issues the device's JWT for
// them (as an assignment change does) and rewrites the file.
func (b *Broker) DeviceCreds(tb testing.TB, device string, units ...string) string {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	got, ok := b.issued[device]
	switch {
	case !ok:
		got = issued{path: MustDeviceCreds(tb, b.Auth, device, units...), units: slices.Clone(units)}
	case !sameUnits(got.units, units):
		u, _, err := b.Auth.SetDeviceAccess(device, "", units)
		if err != nil {
			tb.Fatalf("re-issue device %s for %v: %v", device, units, err)
		}
		mustRewriteCreds(tb, got.path, u.JWT)
		got.units = slices.Clone(units)
	}
	b.issued[device] = got
	return got.path
}

// ConnectDevice connects to the broker over the network as device
// (units), with its credentials and inbox prefix, as the agent does. The
// connection is closed when the test ends.
func (b *Broker) ConnectDevice(tb testing.TB, device string, units ...string) *natsjs.Client {
	tb.Helper()
	return MustConnectCreds(tb, b.URL(), b.DeviceCreds(tb, device, units...), device)
}

// ConnectIntegration issues credentials for integration name (units) and
// connects with them and its inbox prefix, as a backend does.
func (b *Broker) ConnectIntegration(tb testing.TB, name string, units ...string) *natsjs.Client {
	tb.Helper()
	inbox, err := events.IntegrationInboxPrefix(name)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := natsjs.Connect(b.URL(), natsjs.ConnectOptions{Name: name, Credentials: MustIntegrationCreds(tb, b.Auth, name, units...),
		InboxPrefix: inbox})
	if err != nil {
		tb.Fatalf("connect as integration %s: %v", name, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// DeviceOptions are the connect options of device (units): its name,
// credentials file and inbox prefix.
func (b *Broker) DeviceOptions(tb testing.TB, device string, units ...string) natsjs.ConnectOptions {
	tb.Helper()
	inbox, err := events.DeviceInboxPrefix(device)
	if err != nil {
		tb.Fatal(err)
	}
	return natsjs.ConnectOptions{Name: device, Credentials: b.DeviceCreds(tb, device, units...), InboxPrefix: inbox}
}

// ComponentOption is the connect option of the broker's component role
// (ingest, publish, the tools; [natsauth.RoleBroker] for everything).
func (b *Broker) ComponentOption(tb testing.TB, role natsauth.Role) nats.Option {
	tb.Helper()
	userJWT, seed, err := b.Auth.Component(role)
	if err != nil {
		tb.Fatal(err)
	}
	return nats.UserJWTAndSeed(userJWT, seed)
}

// ConnectComponent connects to the broker over the network as role.
func (b *Broker) ConnectComponent(tb testing.TB, role natsauth.Role, opts natsjs.ConnectOptions) *natsjs.Client {
	tb.Helper()
	userJWT, seed, err := b.Auth.Component(role)
	if err != nil {
		tb.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(userJWT, []byte(seed))
	if err != nil {
		tb.Fatal(err)
	}
	opts.Credentials = mustWriteCreds(tb, string(role), creds)
	c, err := natsjs.Connect(b.URL(), opts)
	if err != nil {
		tb.Fatalf("connect as %s: %v", role, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// IngestClient connects as ingest's own identity ([natsauth.RoleIngest]),
// for tests that run an ingester.
func (b *Broker) IngestClient(tb testing.TB) *natsjs.Client {
	tb.Helper()
	return b.ConnectComponent(tb, natsauth.RoleIngest, natsjs.ConnectOptions{Name: "ingest"})
}

func sameUnits(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
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

// EnvelopeBytes encodes e by hand with schema version v, so that a test
// can publish what a newer (or older) writer would.
func EnvelopeBytes(tb testing.TB, e *events.Envelope, v int) []byte {
	tb.Helper()
	m := map[string]any{"id": e.EventID, "ch": string(e.Channel), "kind": e.Kind, "rid": e.RecordID,
		"op": string(e.Op), "v": v, "ts": e.Timestamp.UnixNano()}
	if e.OrgUnit != "" {
		m["org"] = e.OrgUnit
	}
	if len(e.Body) > 0 {
		m["body"] = msgpack.RawMessage(e.Body)
	}
	return Body(tb, m)
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
