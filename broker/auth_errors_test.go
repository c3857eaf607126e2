package broker_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// connCounter is a TCP relay in front of the broker that counts the
// connections made through it: every connection attempt the agent makes
// reaches the server through it, so the count is the attempts the server
// saw.
type connCounter struct {
	ln    net.Listener
	count atomic.Int64
	mu    sync.Mutex
	at    []time.Time
	hold  sync.RWMutex // Hold: no byte goes from the client to the server
}

// Hold stops the traffic from the clients to the server (the connections
// stay open, the server's messages still arrive) until Release.
func (c *connCounter) Hold()    { c.hold.Lock() }
func (c *connCounter) Release() { c.hold.Unlock() }

// pipeHeld copies from in to out like io.Copy, waiting while c is held.
func (c *connCounter) pipeHeld(out, in net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			c.hold.RLock()
			_, werr := out.Write(buf[:n])
			c.hold.RUnlock()
			if werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func mustCountConns(t *testing.T, b *broker.Broker) *connCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := strings.TrimPrefix(b.ClientURL(), "nats://")
	c := &connCounter{ln: ln}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			c.count.Add(1)
			c.mu.Lock()
			c.at = append(c.at, time.Now())
			c.mu.Unlock()
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			open = append(open, in, out)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); c.pipeHeld(out, in); out.Close() }()
			go func() { defer wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return c
}

func (c *connCounter) URL() string { return "nats://" + c.ln.Addr().String() }
func (c *connCounter) N() int      { return int(c.count.Load()) }

// Times returns when each connection came, from start.
func (c *connCounter) Times(start time.Time) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Duration, len(c.at))
	for i, at := range c.at {
		out[i] = at.Sub(start).Round(100 * time.Millisecond)
	}
	return out
}

// runAgentAt is [runAgent] against the broker at url.
func runAgentAt(t *testing.T, url, device, creds string, units ...string) *agent.Agent {
	t.Helper()
	a, _ := runAgentWith(t, agentRun{url: url, device: device, creds: creds, dataDir: t.TempDir(), log: quietLog()}, units...)
	return a
}

type agentRun struct {
	url, device, creds, dataDir string
	log                         *slog.Logger
}

// runAgentWith runs an agent as r says; stop stops it (and is called when
// the test ends).
func runAgentWith(t *testing.T, r agentRun, units ...string) (a *agent.Agent, stop func()) {
	t.Helper()
	off := false
	cfg := agent.Config{DeviceID: r.device, OrgUnits: units, BrokerURL: r.url, Credentials: r.creds, DataDir: r.dataDir,
		APIAddr: "127.0.0.1:0", RefreshMode: &off, SyncInterval: -1}.WithDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := agent.Open(ctx, cfg, r.log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; a.Close() }) }
	t.Cleanup(stop)
	return a, stop
}

// waitAuthError waits until a's status is authentication_error of kind.
func waitAuthError(t *testing.T, a *agent.Agent, kind string) agent.Status {
	t.Helper()
	var st agent.Status
	fstest.Eventually(t, 15*time.Second, func() bool {
		st, _ = a.Status(context.Background())
		return st.State == agent.StateAuthError && st.AuthError == kind
	}, "status authentication_error %s; last %+v", kind, &st)
	return st
}

// notRevoked checks that a reports no revocation and still holds the
// record (unit, events, kind, id).
func notRevoked(t *testing.T, a *agent.Agent, unit, kind, id string) {
	t.Helper()
	st, err := a.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.State == agent.StateRevoked || st.Revoked != nil || st.Wiped != nil {
		t.Fatalf("status %q revoked %+v wiped %+v: only a revocation wipes", st.State, st.Revoked, st.Wiped)
	}
	got, err := a.Records(context.Background(), store.Query{Channel: events.ChannelEvents, Unit: unit, Kind: kind, RecordID: id})
	if err != nil || len(got) != 1 {
		t.Fatalf("record %s/%s/%s: %+v (%v), want it kept", unit, kind, id, got, err)
	}
}

// refusedAgain waits until the relay saw n connections in all: the agent
// dialled again, so every earlier attempt had been answered (and, after
// the first refusal, refused), and checks the status still says kind.
func refusedAgain(t *testing.T, a *agent.Agent, c *connCounter, n int, kind string) {
	t.Helper()
	fstest.Eventually(t, 30*time.Second, func() bool { return c.N() >= n }, "%d connection attempts", n)
	st, err := a.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.State != agent.StateAuthError || st.AuthError != kind {
		t.Fatalf("after %d attempts: state %q auth_error %q, want %s %s", c.N(), st.State, st.AuthError, agent.StateAuthError, kind)
	}
}

// foreignCreds are device credentials from another authority (another
// broker's data dir): the broker does not know their issuer.
func foreignCreds(t *testing.T, device string, units ...string) string {
	t.Helper()
	other, err := natsauth.Open(filepath.Join(t.TempDir(), "auth"))
	if err != nil {
		t.Fatal(err)
	}
	return fstest.MustDeviceCreds(t, other, device, units...)
}

func syncActivities(t *testing.T, a *agent.Agent) int {
	t.Helper()
	acts, err := a.Activity(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, x := range acts {
		if x.Kind == "sync" {
			n++
		}
	}
	return n
}

// TestBroker_AuthError_LoginFailed: credentials of another authority are
// refused by the server ("authorization violation"): login_failed, and no
// sync runs while it lasts.
func TestBroker_AuthError_LoginFailed(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	c := mustCountConns(t, b)
	a := runAgentAt(t, c.URL(), "A", foreignCreds(t, "A", "north"), "north")
	waitAuthError(t, a, natsjs.AuthLoginFailed)
	// The initial sync may have started before the refusal: wait it out.
	fstest.Eventually(t, 15*time.Second, func() bool {
		st, _ := a.Status(context.Background())
		return st.Scope == ""
	}, "the first sync over")
	before := syncActivities(t, a)
	refusedAgain(t, a, c, 4, natsjs.AuthLoginFailed)
	if n := syncActivities(t, a); n != before {
		t.Fatalf("%d syncs ran while the broker refused the credentials", n-before)
	}
	st, _ := a.Status(context.Background())
	t.Logf("syncs before the refusal %d, after %d; running %q; last error %q", before, syncActivities(t, a), st.Scope, st.LastError)
	if !strings.Contains(st.LastError, agent.ErrAuthRefused.Error()) {
		t.Fatalf("last error %q, want %q", st.LastError, agent.ErrAuthRefused)
	}
}

// TestBroker_AuthError_PasswordExpired: credentials that expire while the
// device is connected are cut by the server ("user authentication
// expired"); the plain refusals of the reconnects after it do not turn
// that into login_failed, and an agent started with the expired file
// says password_expired too. Nothing is wiped.
func TestBroker_AuthError_PasswordExpired(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")
	raw, _, err := b.Authority().AddDevice("A", []string{"north"}, natsauth.ExpiresIn(4*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(t.TempDir(), "A.creds")
	if err := natsauth.WriteCreds(creds, raw); err != nil {
		t.Fatal(err)
	}
	c := mustCountConns(t, b)
	a := runAgentAt(t, c.URL(), "A", creds, "north")
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e1", v)
	if c.N() != 1 {
		t.Fatalf("%d connections before expiry, want 1", c.N())
	}
	waitAuthError(t, a, natsjs.AuthPasswordExpired)
	refusedAgain(t, a, c, 3, natsjs.AuthPasswordExpired)
	notRevoked(t, a, "north", "event", "e1") // an expiry wipes nothing

	again := runAgentAt(t, b.ClientURL(), "A", creds, "north")
	waitAuthError(t, again, natsjs.AuthPasswordExpired)
}

// TestBroker_AuthError_TokenRejected: a device revoked while connected is
// told so by the server ("user authentication revoked"): token_rejected
// (the status is revoked, see TestBroker_Revoke_WipesDevice), and it
// makes no connection attempt after it.
func TestBroker_AuthError_TokenRejected(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")
	c := mustCountConns(t, b)
	a := runAgentAt(t, c.URL(), "A", fstest.MustDeviceCreds(t, b.Authority(), "A", "north"), "north")
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e1", v)
	mustRevoke(t, b, "A")
	var st agent.Status
	fstest.Eventually(t, 5*time.Second, func() bool {
		st, _ = a.Status(context.Background())
		return st.AuthError == natsjs.AuthTokenRejected && st.State == agent.StateRevoked && st.Revoked.Wiped != nil
	}, "status revoked, token_rejected; last %+v", &st)
	// A sync asked for now does not run and dials nothing.
	if err := a.RequestSync(agent.ScopeFull); err != nil {
		t.Fatal(err)
	}
	fstest.Eventually(t, 5*time.Second, func() bool {
		st, _ = a.Status(context.Background())
		return st.Scope == "" && strings.Contains(st.LastError, agent.ErrAuthRefused.Error())
	}, "the requested sync refused; last %+v", &st)
	// Told "revoked", the device asks with its status identity why (one
	// connection; nats.go may also have retried the device identity once
	// meanwhile), and then dials nothing more.
	n := c.N()
	if n > 3 {
		t.Fatalf("%d connections, want at most 3: a revoked device does not reconnect", n)
	}
	time.Sleep(3 * time.Second)
	if n2 := c.N(); n2 != n {
		t.Fatalf("%d connections 3 s after the wipe, was %d: a revoked device does not reconnect", n2, n)
	}
}

// mustRevoke revokes device as `broker-embed device revoke` does.
func mustRevoke(t *testing.T, b *broker.Broker, device string) {
	t.Helper()
	if _, err := b.Authority().Revoke(natsauth.KindDevice, device); err != nil {
		t.Fatal(err)
	}
	if err := b.Authority().PushAccount(ctxT(t), b.ClientURL()); err != nil {
		t.Fatal(err)
	}
}

// TestBroker_AuthError_BoundedReconnects: an agent whose credentials the
// broker refuses makes at most 8 connection attempts in 60 s: 7 with its
// device identity (the natsjs.AuthRetry backoff; at nats.go's 1 s
// reconnect wait it would be about 60) and one with its status identity,
// asking why once per refusal kind, and connects and syncs within seconds once its credentials
// file holds credentials the broker takes, without a restart.
func TestBroker_AuthError_BoundedReconnects(t *testing.T) {
	t.Parallel()
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")
	c := mustCountConns(t, b)
	creds := foreignCreds(t, "A", "north")
	start := time.Now()
	a := runAgentAt(t, c.URL(), "A", creds, "north")
	waitAuthError(t, a, natsjs.AuthLoginFailed)
	window := time.NewTimer(60*time.Second - time.Since(start))
	<-window.C // the measurement window itself, not a synchronisation
	const bound = 7 + 1
	n := c.N()
	t.Logf("connection attempts in 60 s: %d (bound %d), at %v", n, bound, c.Times(start))
	if n > bound {
		t.Fatalf("%d connection attempts in 60 s, bound %d", n, bound)
	}
	if n < 3 {
		t.Fatalf("%d connection attempts in 60 s: the agent stopped trying", n)
	}

	good, _, err := b.Authority().AddDevice("A", []string{"north"})
	if err != nil {
		t.Fatal(err)
	}
	tmp := creds + ".new"
	if err := os.WriteFile(tmp, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, creds); err != nil {
		t.Fatal(err)
	}
	replaced := time.Now()
	var st agent.Status
	fstest.Eventually(t, 5*time.Second, func() bool {
		st, _ = a.Status(context.Background())
		return st.Connected && st.AuthError == ""
	}, "connected with the new credentials within 5 s; last %+v", &st)
	t.Logf("connected %v after the credentials file changed", time.Since(replaced).Round(time.Millisecond))
	hasRecord(t, a, "north", events.ChannelEvents, "event", "e1", v)
}
