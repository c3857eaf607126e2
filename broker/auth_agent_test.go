package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// runAgent runs a real device agent for device (units) with the
// credentials file creds against b until the test ends.
func runAgent(t *testing.T, b *broker.Broker, device, creds string, units ...string) *agent.Agent {
	t.Helper()
	return runAgentCA(t, b, device, creds, "", units...)
}

// runAgentCA is runAgent with the agent's ca setting ("": none).
func runAgentCA(t *testing.T, b *broker.Broker, device, creds, ca string, units ...string) *agent.Agent {
	t.Helper()
	off := false
	cfg := agent.Config{DeviceID: device, OrgUnits: units, BrokerURL: b.ClientURL(), Credentials: creds, CA: ca, DataDir: t.TempDir(),
		APIAddr: "127.0.0.1:0", RefreshMode: &off, SyncInterval: -1}.WithDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := agent.Open(ctx, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; a.Close() })
	return a
}

// hasRecord waits until a holds the server's record (unit, ch, kind, id)
// at version v or later.
func hasRecord(t *testing.T, a *agent.Agent, unit string, ch events.Channel, kind, id string, v uint64) {
	t.Helper()
	var got []store.Record
	fstest.Eventually(t, 15*time.Second, func() bool {
		var err error
		got, err = a.Records(context.Background(), store.Query{Channel: ch, Unit: unit, Kind: kind, RecordID: id})
		return err == nil && len(got) == 1 && got[0].Version >= v && !got[0].Pending
	}, "%s has %s/%s/%s/%s at version %d; got %+v", a.Config().DeviceID, unit, ch, kind, id, v, &got)
}

func publishChange(t *testing.T, b *broker.Broker, unit string, ch events.Channel, kind, id string) uint64 {
	t.Helper()
	ack, err := b.Client().Publisher().Publish(ctxT(t), fstest.Change(t, unit, ch, kind, id, map[string]any{"at": time.Now().UnixNano()}), natsjs.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ack.Version
}

// TestBroker_Auth_AgentSyncs: a real agent with nothing but its device
// credentials does its whole normal sync: initial download of its unit
// and the tenant-wide data, a write accepted by ingest, its result.
func TestBroker_Auth_AgentSyncs(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north", "south"))
	vNorth := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")
	vDoc := publishChange(t, b, "north", events.ChannelDocuments, "document", "d1")
	vTenant := publishChange(t, b, "", events.ChannelAdmin, "setting", "s1")
	publishChange(t, b, "south", events.ChannelEvents, "event", "s1")

	a := runAgent(t, b, "A", fstest.MustDeviceCreds(t, b.Authority(), "A", "north"), "north")
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e1", vNorth)
	hasRecord(t, a, "north", events.ChannelDocuments, "document", "d1", vDoc)
	hasRecord(t, a, "", events.ChannelAdmin, "setting", "s1", vTenant)

	m, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "finding", RecordID: "f1", Body: map[string]any{"ok": true}})
	if err != nil {
		t.Fatal(err)
	}
	log, err := b.Client().MutationLog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var res *events.Result
	fstest.Eventually(t, 15*time.Second, func() bool {
		res, _ = log.Get(ctx, "A", m.MutationID)
		return res != nil
	}, "ingest result of A's write")
	if res.Status != events.Accepted {
		t.Fatalf("A's write: %+v, want accepted", res)
	}
	hasRecord(t, a, "north", events.ChannelEvents, "finding", "f1", res.Version)
	fstest.Eventually(t, 15*time.Second, func() bool {
		n, err := a.DB().OutboxCounts(ctx)
		return err == nil && n[store.StateQueued]+n[store.StateSent]+n[store.StateConflict]+n[store.StateRejected] == 0
	}, "A's outbox empty once the result arrived")
	st, err := a.Status(ctx)
	if err != nil || st.AuthError != "" {
		t.Fatalf("status %+v (%v): no authentication error expected", st, err)
	}
}

// TestBroker_Auth_Revoke: revoking a device (as `broker-embed device
// revoke` does: account JWT updated, pushed to the running broker)
// disconnects it within 5 s, it cannot connect again, and another device
// keeps syncing.
func TestBroker_Auth_Revoke(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	auth := b.Authority()
	credsA := fstest.MustDeviceCreds(t, auth, "A", "north")
	closed := make(chan error, 1)
	ncA, err := nats.Connect(b.ClientURL(), nats.UserCredentials(credsA), nats.CustomInboxPrefix(inboxOf(t, "A")),
		nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.ClosedHandler(func(nc *nats.Conn) { closed <- nc.LastError() }))
	if err != nil {
		t.Fatal(err)
	}
	defer ncA.Close()
	bAgent := runAgent(t, b, "B", fstest.MustDeviceCreds(t, auth, "B", "north"), "north")
	hasRecord(t, bAgent, "north", events.ChannelEvents, "event", "e1", publishChange(t, b, "north", events.ChannelEvents, "event", "e1"))

	if _, err := auth.Revoke(natsauth.KindDevice, "A"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	if err := auth.PushAccount(ctx, b.ClientURL()); err != nil {
		t.Fatal(err)
	}
	// The server closes A's connection and refuses every reconnect (the
	// client then gives up: an authentication error twice in a row).
	select {
	case err := <-closed:
		t.Logf("A closed after %v: %v", time.Since(revoked).Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Fatalf("A still connected 5 s after revocation (connected=%v)", ncA.IsConnected())
	}
	if ncA.IsConnected() {
		t.Fatal("A connected after revocation")
	}
	if nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(credsA)); err == nil {
		nc.Close()
		t.Fatal("revoked credentials connect again")
	} else if !errors.Is(err, nats.ErrAuthorization) && !errors.Is(err, nats.ErrAuthRevoked) {
		t.Fatalf("revoked credentials: %v, want an authorization error", err)
	}

	// B is unaffected: a new change reaches it.
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e2")
	if err := bAgent.RequestSync(agent.ScopeEvents); err != nil {
		t.Fatal(err)
	}
	hasRecord(t, bAgent, "north", events.ChannelEvents, "event", "e2", v)
}

// TestBroker_Auth_ManyUnits: a device assigned 60 units connects with its
// credentials (a user JWT of about 68 KB, past nats-server's default 4 KiB
// protocol line) and syncs a record of its last unit.
func TestBroker_Auth_ManyUnits(t *testing.T) {
	units := make([]string, 60)
	for i := range units {
		units[i] = fmt.Sprintf("unit%02d", i)
	}
	b := openBroker(t, testConfig(t.TempDir(), units...))
	creds := fstest.MustDeviceCreds(t, b.Authority(), "A", units...)
	if data, err := os.ReadFile(creds); err != nil || len(data) < 60<<10 {
		t.Fatalf("credentials of %d bytes (%v): the test needs a JWT past 60 KiB", len(data), err)
	}
	v := publishChange(t, b, units[59], events.ChannelEvents, "event", "last")
	a := runAgent(t, b, "A", creds, units...)
	hasRecord(t, a, units[59], events.ChannelEvents, "event", "last", v)
}
