package broker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
)

// probe is a raw NATS connection with a user's credentials that collects
// the errors the server sends it (permission violations arrive
// asynchronously).
type probe struct {
	nc   *nats.Conn
	errs chan error
}

func connectProbe(t *testing.T, url, creds, inbox string, opts ...nats.Option) *probe {
	t.Helper()
	p := &probe{errs: make(chan error, 64)}
	base := []nats.Option{nats.CustomInboxPrefix(inbox), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { p.errs <- err })}
	if creds != "" {
		base = append(base, nats.UserCredentials(creds))
	}
	opts = append(base, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect with %s: %v", creds, err)
	}
	t.Cleanup(nc.Close)
	p.nc = nc
	return p
}

// violation waits for the server's permission error for op ("publish" or
// "subscription") on subj.
func (p *probe) violation(t *testing.T, op, subj string) {
	t.Helper()
	want := fmt.Sprintf("permissions violation for %s to %q", op, subj)
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-p.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
				return
			}
			t.Logf("other error while waiting for %s: %v", want, err)
		case <-timeout:
			t.Fatalf("no %q from the server", want)
		}
	}
}

// denyPub publishes on subj (a request's subject or a plain publish: the
// permission is checked alike) and asserts the server refuses it.
func (p *probe) denyPub(t *testing.T, subj string) {
	t.Helper()
	if err := p.nc.PublishRequest(subj, p.nc.NewRespInbox(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	p.nc.Flush()
	p.violation(t, "publish", subj)
}

func (p *probe) denySub(t *testing.T, subj string) {
	t.Helper()
	sub, err := p.nc.SubscribeSync(subj)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	p.nc.Flush()
	p.violation(t, "subscription", subj)
}

func inboxOf(t *testing.T, device string) string {
	t.Helper()
	in, err := events.DeviceInboxPrefix(device)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestBroker_Auth_DeviceDenied: device A of north, with its own
// credentials, is refused by the server everything outside its rights.
func TestBroker_Auth_DeviceDenied(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north", "south"))
	a := b.Authority()
	for _, u := range []string{"north", "south"} {
		if _, err := b.Client().Publisher().Publish(ctx, fstest.Change(t, u, events.ChannelEvents, "event", "e1", map[string]any{"x": 1}), natsjs.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Device B (north) has a consumer and an upload and a result.
	devB := fstest.MustConnectDevice(t, b.ClientURL(), a, "B", "north")
	durB, _ := natsjs.DurableName("B", events.ChannelEvents)
	cur, err := devB.OpenCursor(ctx, natsjs.CursorSpec{Unit: "north", Channel: events.ChannelEvents, Durable: durB})
	if err != nil {
		t.Fatalf("device B opens its own cursor: %v", err)
	}
	cur.Close()

	p := connectProbe(t, b.ClientURL(), fstest.MustDeviceCreds(t, a, "A", "north"), inboxOf(t, "A"))
	durA, _ := natsjs.DurableName("A", events.ChannelEvents)
	docA, _ := natsjs.DocumentConsumerName("A")
	for _, subj := range []string{
		// a consumer on FS_ORG_south, even under its own name, or reading one there
		"$JS.API.CONSUMER.CREATE.FS_ORG_south." + durA + ".fs.org.south.events.>",
		"$JS.API.CONSUMER.CREATE.FS_ORG_south." + durA,
		"$JS.API.CONSUMER.INFO.FS_ORG_south." + durA,
		"$JS.API.CONSUMER.MSG.NEXT.FS_ORG_south." + durA,
		"$JS.API.STREAM.INFO.FS_ORG_south",
		"$JS.API.DIRECT.GET.FS_ORG_south.fs.org.south.events.event.e1",
		// another device's consumer, and listing consumers
		"$JS.API.CONSUMER.INFO.FS_ORG_north." + durB,
		"$JS.API.CONSUMER.MSG.NEXT.FS_ORG_north." + durB,
		"$JS.API.CONSUMER.DELETE.FS_ORG_north." + durB,
		"$JS.API.CONSUMER.CREATE.FS_ORG_north.someone_else.fs.org.north.>",
		"$JS.API.CONSUMER.CREATE.FS_ORG_north",
		"$JS.API.CONSUMER.LIST.FS_ORG_north",
		"$JS.API.CONSUMER.NAMES.FS_ORG_north",
		// other devices' uploads and results through JetStream
		"$JS.API.CONSUMER.CREATE.FS_UPLOADS.x.fs.up.B.>",
		"$JS.API.CONSUMER.CREATE.FS_RESULTS.fsres_A.fs.res.B.>",
		"$JS.API.CONSUMER.CREATE.FS_RESULTS.fsres_A",
		"$JS.API.DIRECT.GET.FS_RESULTS.fs.res.B.m1",
		"$JS.API.DIRECT.GET.FS_RESULTS",
		"$JS.API.STREAM.MSG.GET.FS_RESULTS",
		"$JS.API.DIRECT.GET.FS_UPLOADS.fs.up.B.north.events.event.e1",
		// publishing as B, on the org streams, results or the publish API
		"fs.up.B.north.events.event.e1",
		"fs.org.south.events.event.e1",
		"fs.org.north.events.event.e1",
		"fs.tenant.admin.setting.s1",
		"fs.res.A.m1",
		"fs.res.B.m1",
		events.PublishSubject,
		// stream administration; ingest's durable
		"$JS.API.STREAM.PURGE.FS_ORG_north",
		"$JS.API.STREAM.DELETE.FS_ORG_north",
		"$JS.API.STREAM.UPDATE.FS_ORG_north",
		"$JS.API.STREAM.CREATE.FS_EVIL",
		"$JS.API.STREAM.PURGE.FS_RESULTS",
		"$JS.API.STREAM.DELETE.FS_UPLOADS",
		"$JS.API.STREAM.MSG.DELETE.FS_ORG_north",
		"$JS.API.CONSUMER.DELETE.FS_UPLOADS." + natsjs.IngestDurable,
		"$JS.API.STREAM.LIST",
		// another device's access: its grant, its sign-ins
		"fs.acc.B.get",
		"fs.acc.B.signin",
		"fs.acc.A.grant",
		// document content: writing its own unit's bucket, another
		// consumer or an unfiltered one there, another unit's bucket,
		// the document API, purging
		"$O.FS_DOCS_north.C.x",
		"$O.FS_DOCS_north.M.eA==",
		"$JS.API.CONSUMER.CREATE.OBJ_FS_DOCS_north.someone_else.$O.FS_DOCS_north.C.>",
		"$JS.API.CONSUMER.CREATE.OBJ_FS_DOCS_north." + docA,
		"$JS.API.CONSUMER.CREATE.OBJ_FS_DOCS_north",
		"$JS.API.CONSUMER.CREATE.OBJ_FS_DOCS_north." + docA + ".$O.FS_DOCS_north.M.>",
		"$JS.API.CONSUMER.CREATE.OBJ_FS_DOCS_north." + docA + ".$O.FS_DOCS_north.>",
		"$JS.API.CONSUMER.CREATE.OBJ_FS_DOCS_south." + docA + ".$O.FS_DOCS_south.C.>",
		"$JS.API.CONSUMER.MSG.NEXT.OBJ_FS_DOCS_south." + docA,
		"$JS.API.STREAM.INFO.OBJ_FS_DOCS_south",
		"$JS.API.DIRECT.GET.OBJ_FS_DOCS_south.$O.FS_DOCS_south.M.eA==",
		"$JS.API.STREAM.PURGE.OBJ_FS_DOCS_north",
		events.DocumentAPISubject,
	} {
		p.denyPub(t, subj)
	}
	for _, subj := range []string{"fs.up.B.>", "fs.res.B.>", "fs.up.>", "fs.org.north.>", "_INBOX.>", inboxOf(t, "B") + ".>", "$JS.API.>",
		"fs.acc.B.grant", "fs.acc.*.get", "fs.acc.>"} {
		p.denySub(t, subj)
	}

	// Nothing changed: streams, messages, ingest's durable, B's consumer.
	for u, want := range map[string]uint64{"north": 1, "south": 1} {
		if st, err := b.Client().UnitState(ctx, u); err != nil || st.Msgs != want {
			t.Fatalf("%s: %+v %v, want %d message", u, st, err, want)
		}
	}
	js, _ := jetstream.New(b.Client().Conn())
	for stream, name := range map[string]string{events.UploadStream: natsjs.IngestDurable, "FS_ORG_north": durB} {
		if _, err := js.Consumer(ctx, stream, name); err != nil {
			t.Fatalf("consumer %s on %s: %v", name, stream, err)
		}
	}
	if _, err := js.Consumer(ctx, "FS_ORG_south", durA); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("A's consumer on FS_ORG_south: %v, want none", err)
	}
}

// TestBroker_Auth_ForgedResults: no client but ingest may publish a
// result, whatever it holds: a device (for itself or another) and an
// integration are refused, and the device's real write still gets its
// real result.
func TestBroker_Auth_ForgedResults(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	a := b.Authority()
	forger := connectProbe(t, b.ClientURL(), fstest.MustDeviceCreds(t, a, "mallory", "north"), inboxOf(t, "mallory"))
	in, _ := events.IntegrationInboxPrefix("crm")
	backend := connectProbe(t, b.ClientURL(), fstest.MustIntegrationCreds(t, a, "crm", "north"), in)

	dev := fstest.MustConnectDevice(t, b.ClientURL(), a, "tab1", "north")
	res, err := dev.SubscribeResults("tab1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	forged, _ := events.EncodeResult(&events.Result{DeviceID: "tab1", MutationID: "m1", Status: events.Accepted, Version: 99, At: 1})
	for _, p := range []*probe{forger, backend} {
		for _, subj := range []string{"fs.res.tab1.m1", "fs.res.mallory.m1"} {
			if err := p.nc.Publish(subj, forged); err != nil {
				t.Fatal(err)
			}
			p.nc.Flush()
			p.violation(t, "publish", subj)
		}
	}
	e := fstest.Change(t, "north", events.ChannelEvents, "event", "r1", map[string]any{"n": 1})
	e.Origin = events.Origin{DeviceID: "tab1", MutationID: "m1"}
	if _, err := dev.PublishUpload(ctx, e); err != nil {
		t.Fatal(err)
	}
	got, err := res.Next(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	r, err := events.DecodeResult(got[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	v, err := b.Client().Publisher().Version(ctx, e.Address())
	if err != nil || r.Status != events.Accepted || r.Version != v || v == 99 {
		t.Fatalf("first result %+v, stored version %d (%v): want ingest's acceptance", r, v, err)
	}
}

// TestBroker_Auth_Unauthenticated: without credentials, or with
// credentials not signed by this broker's account, nothing connects.
func TestBroker_Auth_Unauthenticated(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	if nc, err := nats.Connect(b.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("connect without credentials: %v, want an authorization violation", err)
	}
	other, err := natsauth.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	creds := fstest.MustDeviceCreds(t, other, "tab1", "north")
	if nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(creds)); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("connect with another operator's credentials: %v, want an authorization violation", err)
	}
}

// TestBroker_Auth_None: auth: none is an explicit choice, warned about at
// start, and then anyone connects.
func TestBroker_Auth_None(t *testing.T) {
	cfg := testConfig(t.TempDir(), "north")
	cfg.Auth = broker.AuthNone
	log := &fstest.Output{}
	b, err := broker.Open(ctxT(t), cfg, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBroker(t, b) })
	if b.Authority() != nil {
		t.Fatal("auth: none has an authority")
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "WITHOUT AUTHENTICATION") {
		t.Fatalf("no warning at start:\n%s", log.String())
	}
	nc, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatalf("connect without credentials to auth: none: %v", err)
	}
	defer nc.Close()
	if _, err := nc.Request(events.HelloSubject, []byte(`{}`), 5*time.Second); err != nil {
		t.Fatalf("request without credentials: %v", err)
	}
}

// TestBroker_Auth_Reopen: the keys made at first start are reused: a
// device issued before a restart connects after it.
func TestBroker_Auth_Reopen(t *testing.T) {
	cfg := testConfig(t.TempDir(), "north")
	b := openBroker(t, cfg)
	creds := fstest.MustDeviceCreds(t, b.Authority(), "tab1", "north")
	account := b.Authority().TenantAccount()
	closeBroker(t, b)
	b = openBroker(t, cfg)
	if b.Authority().TenantAccount() != account {
		t.Fatal("a new tenant account after restart")
	}
	dev := fstest.MustConnectCreds(t, b.ClientURL(), creds, "tab1")
	if _, err := dev.Hello(context.Background(), events.LocalHello("agent")); err != nil {
		t.Fatalf("version check after restart: %v", err)
	}
}

// TestBroker_Auth_StatusIdentity: a device's status identity (the second
// identity of its credentials file) may ask for its own grant and nothing
// else: no data, no uploads, no other device's grant.
func TestBroker_Auth_StatusIdentity(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	creds, _, err := b.Authority().AddDevice("A", []string{"north"})
	if err != nil {
		t.Fatal(err)
	}
	userJWT, kp, ok := natsauth.ParseStatusCreds(creds)
	if !ok {
		t.Fatal("device credentials hold no status identity")
	}
	g, err := natsjs.GrantAs(ctx, b.ClientURL(), "", "A", userJWT, kp)
	if err != nil || g.Device != "A" || !slices.Equal(g.OrgUnits, []string{"north"}) || g.JWT == "" {
		t.Fatalf("grant as status identity: %+v %v", g, err)
	}
	p := connectProbe(t, b.ClientURL(), "", inboxOf(t, "A"), nats.UserJWT(func() (string, error) { return userJWT, nil }, kp.Sign))
	for _, subj := range []string{"fs.acc.B.get", "fs.acc.A.signin", "fs.up.A.north.events.event.e1", events.HelloSubject,
		"$JS.API.STREAM.INFO.FS_ORG_north", "$JS.API.CONSUMER.CREATE.FS_ORG_north.fsdev_A_events.fs.org.north.events.>"} {
		p.denyPub(t, subj)
	}
	for _, subj := range []string{"fs.acc.A.grant", "fs.res.A.>", "fs.org.north.>"} {
		p.denySub(t, subj)
	}
}

// TestBroker_Auth_DocumentWriters: the tool may put document content but
// not purge, delete or rewrite a document bucket's stream nor answer the
// document API; an integration may not write content or call it.
func TestBroker_Auth_DocumentWriters(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	tool := connectProbe(t, b.ClientURL(), "", "_INBOX", fstest.ToolCreds(t, b.Authority()))
	for _, subj := range []string{"$JS.API.STREAM.PURGE.OBJ_FS_DOCS_north", "$JS.API.STREAM.DELETE.OBJ_FS_DOCS_north",
		"$JS.API.STREAM.UPDATE.OBJ_FS_DOCS_north", "$JS.API.STREAM.MSG.DELETE.OBJ_FS_DOCS_north"} {
		tool.denyPub(t, subj)
	}
	tool.denySub(t, events.DocumentAPISubject)
	in, _ := events.IntegrationInboxPrefix("crm")
	crm := connectProbe(t, b.ClientURL(), fstest.MustIntegrationCreds(t, b.Authority(), "crm", "north"), in)
	for _, subj := range []string{"$O.FS_DOCS_north.C.x", "$O.FS_DOCS_north.M.eA==", events.DocumentAPISubject,
		"$JS.API.STREAM.INFO.OBJ_FS_DOCS_north", "$JS.API.STREAM.PURGE.OBJ_FS_DOCS_north"} {
		crm.denyPub(t, subj)
	}
}
