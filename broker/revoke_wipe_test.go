package broker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// syncBuffer is a log destination safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBroker_Revoke_WipesDevice: device A holds records and one write the
// server never got (its uploads are held on the way); revoking A (as
// `broker-embed device revoke` does) makes the server tell it so, and
// within 5 s A reports the unsent write in its log and status, wipes its
// records and outbox, shows revoked, and connects no more, not even
// after a restart with the same credentials. B keeps syncing. New
// credentials lift the revocation.
func TestBroker_Revoke_WipesDevice(t *testing.T) {
	ctx := ctxT(t)
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")
	c := mustCountConns(t, b)
	logs := &syncBuffer{}
	credsA, dirA := fstest.MustDeviceCreds(t, b.Authority(), "A", "north"), t.TempDir()
	runA := agentRun{url: c.URL(), device: "A", creds: credsA, dataDir: dirA, log: slog.New(slog.NewTextHandler(logs, nil))}
	a, stopA := runAgentWith(t, runA, "north")
	bAgent := runAgentAt(t, b.ClientURL(), "B", fstest.MustDeviceCreds(t, b.Authority(), "B", "north"), "north")
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e1", v)
	hasRecord(t, bAgent, "north", events.ChannelEvents, "event", "e1", v)

	c.Hold() // A's upload of the write below never reaches the server
	held := true
	defer func() {
		if held {
			c.Release()
		}
	}()
	m, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "finding", RecordID: "f1", Body: map[string]any{"ok": true}})
	if err != nil {
		t.Fatal(err)
	}
	mustRevoke(t, b, "A")
	revoked := time.Now()
	var st agent.Status
	fstest.Eventually(t, 5*time.Second, func() bool {
		st, _ = a.Status(ctx)
		return st.State == agent.StateRevoked && st.Revoked != nil && st.Revoked.Wiped != nil
	}, "A revoked and wiped within 5 s; last %+v", &st)
	t.Logf("A revoked and wiped %v after the revocation: %+v", time.Since(revoked).Round(time.Millisecond), *st.Revoked)
	if st.AuthError != natsjs.AuthTokenRejected || st.Revoked.UnsentWrites != 1 || len(st.Revoked.Unsent) != 1 ||
		st.Revoked.Unsent[0].MutationID != m.MutationID || st.Revoked.Unsent[0].RecordID != "f1" {
		t.Fatalf("status auth_error %q revoked %+v: want token_rejected and the one unsent write %s", st.AuthError, st.Revoked, m.MutationID)
	}
	if st.Revoked.Wiped.Records < 1 || st.Revoked.Wiped.Unsent != 1 {
		t.Fatalf("wipe report %+v: want e1 and the unsent write counted", st.Revoked.Wiped)
	}
	if l := logs.String(); !strings.Contains(l, "unsent_writes=1") || !strings.Contains(l, m.MutationID) {
		t.Fatalf("the log does not report the unsent write %s:\n%s", m.MutationID, l)
	}
	mustBeEmpty(t, a)
	c.Release()
	held = false

	// B is unaffected; A made no connection since the revocation.
	v2 := publishChange(t, b, "north", events.ChannelEvents, "event", "e2")
	if err := bAgent.RequestSync(agent.ScopeEvents); err != nil {
		t.Fatal(err)
	}
	hasRecord(t, bAgent, "north", events.ChannelEvents, "event", "e2", v2)
	// Once connected, then at most its status identity asking why and
	// one retry by nats.go before the wipe closed the connection.
	connections := c.N()
	if connections > 3 {
		t.Fatalf("A connected %d times, want at most 3 (no reconnect after the revocation)", connections)
	}

	// Restarted with the same credentials, A stays revoked and offline.
	stopA()
	a, _ = runAgentWith(t, runA, "north")
	if st, err = a.Status(ctx); err != nil || st.State != agent.StateRevoked || st.Revoked == nil || st.Revoked.UnsentWrites != 1 {
		t.Fatalf("restarted A: %+v (%v), want revoked with the unsent write reported", st, err)
	}
	mustBeEmpty(t, a)
	if _, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: string(events.ChannelEvents), Kind: "event",
		RecordID: "after-revoke", Body: map[string]any{"a": 1}}); !errors.Is(err, agent.ErrRevoked) {
		t.Fatalf("a local write on the revoked device: %v, want ErrRevoked (it could never be uploaded)", err)
	}
	if err := a.RequestSync(agent.ScopeFull); err != nil {
		t.Fatal(err)
	}
	hasRecord(t, bAgent, "north", events.ChannelEvents, "event", "e2", v2)
	if n := c.N(); n != connections {
		t.Fatalf("restarted revoked A connected (%d connections in all, %d before the restart)", n, connections)
	}

	// New credentials for A lift the revocation: it syncs again from scratch.
	stopA()
	runA.creds = fstest.MustDeviceCreds(t, b.Authority(), "A", "north")
	a, _ = runAgentWith(t, runA, "north")
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e2", v2)
	if st, err = a.Status(ctx); err != nil || st.Revoked != nil || st.AuthError != "" {
		t.Fatalf("A with new credentials: %+v (%v), want no revocation", st, err)
	}
}

// mustBeEmpty checks that a holds no org data: no record in any channel,
// an empty outbox, no checkpoints, and no activity but the revocation.
func mustBeEmpty(t *testing.T, a *agent.Agent) {
	t.Helper()
	ctx := context.Background()
	for _, ch := range events.Channels {
		recs, err := a.Records(ctx, store.Query{Channel: ch})
		if err != nil || len(recs) != 0 {
			t.Fatalf("%s records after the wipe: %+v (%v)", ch, recs, err)
		}
	}
	counts, err := a.DB().OutboxCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for state, n := range counts {
		if n != 0 {
			t.Fatalf("outbox after the wipe: %d %s", n, state)
		}
	}
	if cps, err := a.DB().Checkpoints(ctx); err != nil || len(cps) != 0 {
		t.Fatalf("checkpoints after the wipe: %+v (%v)", cps, err)
	}
	acts, err := a.Activity(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range acts {
		if x.Kind != "revoked" {
			t.Fatalf("activity after the wipe: %+v", x)
		}
	}
}

// TestBroker_Revoke_WrongCredentialsKeepData: a device with data
// restarted with credentials the broker does not know gets login_failed
// and keeps everything: a refusal is not a revocation.
func TestBroker_Revoke_WrongCredentialsKeepData(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")
	dir := t.TempDir()
	run := agentRun{url: b.ClientURL(), device: "A", creds: fstest.MustDeviceCreds(t, b.Authority(), "A", "north"), dataDir: dir, log: quietLog()}
	a, stop := runAgentWith(t, run, "north")
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e1", v)
	stop()
	run.creds = foreignCreds(t, "A", "north")
	a, _ = runAgentWith(t, run, "north")
	waitAuthError(t, a, natsjs.AuthLoginFailed)
	notRevoked(t, a, "north", "event", "e1")
}
