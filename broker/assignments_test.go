package broker_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// publishAdmin publishes an Admin record (body nil: its delete) as the
// server side.
func publishAdmin(t *testing.T, b *broker.Broker, unit, kind, id string, body map[string]any) {
	t.Helper()
	e := fstest.Change(t, unit, events.ChannelAdmin, kind, id, body)
	if body == nil {
		e.Op, e.Body = events.OpDelete, nil
	}
	if _, err := b.Client().Publisher().Publish(ctxT(t), e, natsjs.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
}

// mustPersonCreds issues device credentials bound to person, starting
// with units.
func mustPersonCreds(t *testing.T, b *broker.Broker, device, person string, units ...string) string {
	t.Helper()
	creds, _, err := b.Authority().AddDevice(device, units, natsauth.ForPerson(person))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), device+".creds")
	if err := natsauth.WriteCreds(path, creds); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitUnits(t *testing.T, a *agent.Agent, want ...string) {
	t.Helper()
	var got []string
	fstest.Eventually(t, 10*time.Second, func() bool {
		got = a.OrgUnits()
		return slices.Equal(got, want)
	}, "agent carries %v, want %v", &got, want)
}

// currentCreds returns the device's current user JWT (from the registry)
// with the seed of its credentials file, as nats options.
func currentCreds(t *testing.T, b *broker.Broker, device, credsFile string) nats.Option {
	t.Helper()
	u, err := b.Authority().Device(device)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(credsFile)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return nats.UserJWT(func() (string, error) { return u.JWT, nil }, kp.Sign)
}

// TestBroker_Assignments: the user assignments in the Admin data decide
// device A's org units (A is bound to alice). Adding alice to south gives
// A the permission and brings south in by initial sync; removing her from
// north while A is offline withdraws the permission (the broker denies
// A's consumers there and its old JWT), deletes A's consumers on north,
// and when A comes back it learns the change with its status identity,
// purges north and turns its queued north write into a sync error.
func TestBroker_Assignments(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north", "south", "east"))
	publishAdmin(t, b, "north", "user_assignment", "a-north", map[string]any{"user": "alice", "role": "inspector"})
	vN := publishChange(t, b, "north", events.ChannelEvents, "event", "n1")
	vS := publishChange(t, b, "south", events.ChannelEvents, "event", "s1")
	creds := mustPersonCreds(t, b, "A", "alice") // no units given: the assignments decide
	r := agentRun{url: b.ClientURL(), device: "A", creds: creds, dataDir: t.TempDir(), log: quietLog()}
	a, stop := runAgentWith(t, r, "east") // the config's units are replaced by the grant
	waitUnits(t, a, "north")
	hasRecord(t, a, "north", events.ChannelEvents, "event", "n1", vN)

	// Adding an assignment: new permission, initial sync of south.
	publishAdmin(t, b, "south", "user_assignment", "a-south", map[string]any{"user": "alice", "role": "inspector"})
	waitUnits(t, a, "north", "south")
	hasRecord(t, a, "south", events.ChannelEvents, "event", "s1", vS)
	oldJWT, err := b.Authority().Device("A")
	if err != nil {
		t.Fatal(err)
	}

	// Removing one while A is offline, with a write to north queued.
	stop()
	a, stop = runAgentWith(t, agentRun{url: "nats://127.0.0.1:1", device: "A", creds: creds, dataDir: r.dataDir, log: quietLog()}, "east")
	m, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "n-offline", Body: map[string]any{"x": 1}})
	if err != nil {
		t.Fatal(err)
	}
	stop()
	publishAdmin(t, b, "north", "user_assignment", "a-north", nil)
	fstest.Eventually(t, 10*time.Second, func() bool {
		u, err := b.Authority().Device("A")
		return err == nil && slices.Equal(u.OrgUnits, []string{"south"})
	}, "the broker re-issues A for south only")
	durable, _ := natsjs.DurableName("A", events.ChannelEvents)
	js, err := jetstream.New(b.Client().Conn())
	if err != nil {
		t.Fatal(err)
	}
	fstest.Eventually(t, 10*time.Second, func() bool {
		_, err := js.Consumer(ctx, "FS_ORG_north", durable)
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	}, "A's consumers on north are deleted")
	denied := connectProbe(t, b.ClientURL(), creds, inboxOf(t, "A"), currentCreds(t, b, "A", creds))
	denied.denyPub(t, "$JS.API.CONSUMER.CREATE.FS_ORG_north."+durable+".fs.org.north.events.>")
	if _, err := nats.Connect(b.ClientURL(), nats.UserJWT(func() (string, error) { return oldJWT.JWT, nil }, func([]byte) ([]byte, error) {
		return nil, errors.New("unused")
	}), nats.NoReconnect()); err == nil {
		t.Fatal("A's JWT from before the removal still connects")
	}

	// A comes back: refused with its stored JWT, it asks with its status
	// identity, takes the new grant and reconnects.
	a, _ = runAgentWith(t, r, "east")
	waitUnits(t, a, "south")
	fstest.Eventually(t, 10*time.Second, func() bool {
		got, err := a.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north"})
		return err == nil && len(got) == 1 && got[0].Pending && got[0].RecordID == "n-offline" // the failed write, until Undo
	}, "north's records are purged")
	var cs []store.Conflict
	fstest.Eventually(t, 10*time.Second, func() bool {
		cs, _ = a.Conflicts(ctx)
		return len(cs) == 1 && cs[0].MutationID == m.MutationID
	}, "the queued north write is a sync error; got %+v", &cs)
	if cs[0].State != store.StateRejected || cs[0].Reason != events.ReasonNotAllowed {
		t.Fatalf("queued north write: %+v, want rejected not_allowed", cs[0])
	}
	vS2 := publishChange(t, b, "south", events.ChannelEvents, "event", "s2")
	if err := a.RequestSync(agent.ScopeEvents); err != nil {
		t.Fatal(err)
	}
	hasRecord(t, a, "south", events.ChannelEvents, "event", "s2", vS2)
	if _, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "n2",
		Body: map[string]any{"x": 1}}); !errors.Is(err, agent.ErrBadWrite) {
		t.Fatalf("write to the withdrawn unit: %v, want ErrBadWrite", err)
	}
}

// TestBroker_RolePermissions: ingest checks each write against the role
// permissions of the device's user: a finding by an inspector (who may
// write events only) is rejected with not_allowed and a reason, and is a
// sync error on the device; the event is accepted.
func TestBroker_RolePermissions(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	publishAdmin(t, b, "north", "user_assignment", "a1", map[string]any{"user": "alice", "role": "inspector"})
	publishAdmin(t, b, "", "role_permission", "insp", map[string]any{"role": "inspector", "allow": []string{"event:write"}})
	a := runAgent(t, b, "A", mustPersonCreds(t, b, "A", "alice", "north"), "north")
	waitUnits(t, a, "north")
	ev, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "e1", Body: map[string]any{"t": 1}})
	if err != nil {
		t.Fatal(err)
	}
	fd, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "finding", RecordID: "f1", Body: map[string]any{"t": 1}})
	if err != nil {
		t.Fatal(err)
	}
	var cs []store.Conflict
	fstest.Eventually(t, 15*time.Second, func() bool {
		cs, _ = a.Conflicts(ctx)
		return len(cs) == 1
	}, "one sync error; got %+v", &cs)
	if cs[0].MutationID != fd.MutationID || cs[0].Reason != events.ReasonNotAllowed || cs[0].Message == "" {
		t.Fatalf("sync error %+v: want the finding %s rejected not_allowed with a reason", cs[0], fd.MutationID)
	}
	t.Logf("finding rejected: %s", cs[0].Message)
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e1", 1)
	if rec, _ := a.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", Kind: "event", RecordID: "e1"}); len(rec) != 1 || rec[0].EventID != events.MutationEventID("A", ev.MutationID) {
		t.Fatalf("event record %+v: want the accepted write %s", rec, ev.MutationID)
	}

	// Granting the role findings lets the next one through.
	publishAdmin(t, b, "", "role_permission", "insp", map[string]any{"role": "inspector", "allow": []string{"event:write", "finding:write"}})
	// The broker follows the Admin data asynchronously: write findings
	// until one is accepted (the ones before the change are rejected).
	fstest.Eventually(t, 10*time.Second, func() bool {
		if _, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "finding", RecordID: "f2",
			Body: map[string]any{"t": time.Now().UnixNano()}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // the write's round trip
		got, err := a.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", Kind: "finding", RecordID: "f2"})
		return err == nil && len(got) == 1 && !got[0].Pending
	}, "a finding is accepted once the role may write findings")
	hasRecord(t, a, "north", events.ChannelEvents, "finding", "f2", 1)
}

// TestBroker_SignIn: POST /v1/signin's check against the server: an
// unknown user, a user assigned elsewhere and a disabled user get
// login_failed with the reason; alice signs in and her assignments decide
// the device's units.
func TestBroker_SignIn(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north", "south"))
	publishAdmin(t, b, "north", "user_assignment", "a1", map[string]any{"user": "alice", "role": "inspector"})
	publishAdmin(t, b, "south", "user_assignment", "a2", map[string]any{"user": "alice", "role": "inspector"})
	publishAdmin(t, b, "south", "user_assignment", "b1", map[string]any{"user": "bob", "role": "inspector"})
	publishAdmin(t, b, "north", "user_assignment", "c1", map[string]any{"user": "carol", "role": "inspector"})
	publishAdmin(t, b, "", "user", "carol", map[string]any{"disabled": true})
	a := runAgent(t, b, "A", fstest.MustDeviceCreds(t, b.Authority(), "A", "north"), "north")
	fstest.Eventually(t, 10*time.Second, func() bool { st, _ := a.Status(ctx); return st.State == agent.StateUpToDate },
		"A synced")
	for _, user := range []string{"mallory", "bob", "carol"} {
		err := a.SignIn(ctx, user)
		var refused *agent.SignInError
		if !errors.As(err, &refused) || refused.Kind != events.AuthLoginFailed || refused.Message == "" {
			t.Fatalf("sign-in of %s: %v, want login_failed with a reason", user, err)
		}
		t.Logf("%s refused: %s", user, refused.Message)
	}
	if err := a.SignIn(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if a.User() != "alice" {
		t.Fatalf("user %q after sign-in, want alice", a.User())
	}
	waitUnits(t, a, "north", "south")
}

// TestBroker_RevokedWhileOffline: a device revoked while it was offline is
// told so when it comes back (with its status identity, the broker
// refusing its device identity) and wipes its local data.
func TestBroker_RevokedWhileOffline(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")
	r := agentRun{url: b.ClientURL(), device: "A", creds: fstest.MustDeviceCreds(t, b.Authority(), "A", "north"), dataDir: t.TempDir(), log: quietLog()}
	a, stop := runAgentWith(t, r, "north")
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e1", v)
	stop()
	mustRevoke(t, b, "A")
	a, _ = runAgentWith(t, r, "north")
	var st agent.Status
	fstest.Eventually(t, 15*time.Second, func() bool {
		st, _ = a.Status(ctx)
		return st.State == agent.StateRevoked && st.Revoked != nil && st.Revoked.Wiped != nil
	}, "A learns it was revoked and wipes; last %+v", &st)
	mustBeEmpty(t, a)
}
