package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

// startQuietAgent opens and runs an agent of cfg, without logs, until the
// test ends.
func startQuietAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a, err := Open(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run %s: %v", cfg.DeviceID, err)
		}
		a.Close()
	})
	return a
}

// mustSyncOnce runs an agent of cfg until its initial sync has completed
// and stops it.
func mustSyncOnce(t *testing.T, cfg Config) {
	t.Helper()
	a, err := Open(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	fstest.Eventually(t, 30*time.Second, func() bool { return settled(a) }, "%s synced", cfg.DeviceID)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

func mustCopyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// settled reports whether a has finished its first sync and its
// autosync has caught up once since connecting.
func settled(a *Agent) bool {
	if a.catchUps.Load() == 0 {
		return false
	}
	st, err := a.Status(context.Background())
	return err == nil && st.State == StateUpToDate && st.Connected
}

// brokerTraffic counts, from now on, the JetStream API requests and the
// other messages anyone publishes on b (replies to earlier requests
// aside), as the broker routes them.
type brokerTraffic struct {
	api, other atomic.Int64
	mu         sync.Mutex
	seen       []string
}

func watchBroker(t *testing.T, b *fstest.Broker) *brokerTraffic {
	t.Helper()
	tr := &brokerTraffic{}
	sub, err := b.Client.Conn().Subscribe(">", func(m *nats.Msg) {
		switch {
		case strings.HasPrefix(m.Subject, "$JS.API."):
			tr.api.Add(1)
		case strings.HasPrefix(m.Subject, "_INBOX."):
			return
		default:
			tr.other.Add(1)
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if len(tr.seen) < 10 {
			tr.seen = append(tr.seen, m.Subject)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Client.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return tr
}

// TestAgent_Autosync_IdleDevicesCostTheBrokerNothing: 100 connected agents
// with nothing to do make no JetStream API request and publish nothing for
// a minute (5 s with -short), and write nothing to their stores.
func TestAgent_Autosync_IdleDevicesCostTheBrokerNothing(t *testing.T) {
	const agents = 100
	window := time.Minute
	if testing.Short() {
		window = 5 * time.Second
	}
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	// One agent makes the initial sync; the others start from a copy of
	// its store, as devices that synced before: no sync is due for 30
	// minutes, so each only connects and catches up.
	template := t.TempDir()
	synced := testConfig("idle-template", "north")
	synced.BrokerURL, synced.DataDir = b.URL(), template
	synced.Credentials = b.DeviceCreds(t, synced.DeviceID, synced.OrgUnits...)
	mustSyncOnce(t, synced)
	started := time.Now()
	all := make([]*Agent, agents)
	for i := range all {
		cfg := synced
		cfg.DeviceID, cfg.DataDir = fmt.Sprintf("idle%03d", i), t.TempDir()
		cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
		mustCopyFile(t, synced.DBPath(), cfg.DBPath())
		all[i] = startQuietAgent(t, cfg)
	}
	waiting := slices.Clone(all)
	fstest.Eventually(t, 60*time.Second, func() bool {
		waiting = slices.DeleteFunc(waiting, settled)
		return len(waiting) == 0
	}, "%d agents connected and caught up", agents)
	t.Logf("%d agents connected and caught up in %v", agents, time.Since(started).Round(time.Millisecond))

	tr := watchBroker(t, b)
	commits := make([]uint64, agents)
	for i, a := range all {
		commits[i] = a.DB().Commits()
	}
	time.Sleep(window) // the measurement window: nothing is waited for
	t.Logf("%d idle agents for %v: %d JetStream API requests, %d other messages (first subjects %v); limit 0",
		agents, window, tr.api.Load(), tr.other.Load(), tr.seen)
	if tr.api.Load() != 0 || tr.other.Load() != 0 {
		t.Fatalf("idle agents made %d JetStream API requests and published %d other messages in %v (first subjects %v), want none",
			tr.api.Load(), tr.other.Load(), window, tr.seen)
	}
	for i, a := range all {
		if c := a.DB().Commits(); c != commits[i] {
			t.Fatalf("idle agent %d committed %d store writes in %v, want none", i, c-commits[i], window)
		}
		if st, err := a.Status(context.Background()); err != nil || !st.Connected {
			t.Fatalf("agent %d disconnected during the window: %+v %v", i, st, err)
		}
	}
}

// waitOutboxEmpty waits, woken by the agent's status changes rather than
// by polling, until no write of a is unconfirmed, and returns when that
// was seen.
func waitOutboxEmpty(t *testing.T, a *Agent, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		changed := a.StatusChanged()
		c, err := a.DB().OutboxCounts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c[store.StateQueued]+c[store.StateSent] == 0 {
			return time.Now()
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("writes still unconfirmed after %v: %v", timeout, c)
		}
	}
}

// TestAgent_Autosync_ResultArrivesAtOnce: a result reaches a connected,
// idle device within milliseconds of ingest writing it, and a write goes
// up and comes back accepted in about the time ingest takes, with nothing
// polling in between.
func TestAgent_Autosync_ResultArrivesAtOnce(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	cfg := testConfig("tab1", "north")
	cfg.BrokerURL, cfg.DataDir = b.URL(), t.TempDir()
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	a := startQuietAgent(t, cfg)
	fstest.Eventually(t, 30*time.Second, func() bool { return settled(a) }, "agent synced and caught up")

	// Ingest is not running: the test plays it, publishing each result
	// itself once the upload is on the broker.
	const trials, limit = 5, 200 * time.Millisecond
	var took []time.Duration
	for i := 0; i < trials; i++ {
		m, err := a.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: fmt.Sprintf("r%d", i), Body: map[string]any{"i": i}})
		if err != nil {
			t.Fatal(err)
		}
		fstest.Eventually(t, 10*time.Second, func() bool {
			c, err := a.DB().OutboxCounts(ctx)
			return err == nil && c[store.StateSent] == 1
		}, "write %d uploaded", i)
		start := time.Now()
		if err := b.Client.PublishResult(ctx, &events.Result{DeviceID: "tab1", MutationID: m.MutationID, Status: events.Accepted,
			Version: uint64(100 + i), At: time.Now().UnixMilli()}); err != nil {
			t.Fatal(err)
		}
		d := waitOutboxEmpty(t, a, 5*time.Second).Sub(start)
		took = append(took, d)
		recs, err := a.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", RecordID: m.Addr.RecordID, Kind: "event"})
		if err != nil || len(recs) != 1 || recs[0].Pending || recs[0].Version != uint64(100+i) {
			t.Fatalf("record after its result: %+v %v, want version %d, not pending", recs, err, 100+i)
		}
	}
	t.Logf("result published → applied on the device: %v (limit %v each)", took, limit)
	for i, d := range took {
		if d > limit {
			t.Fatalf("result %d took %v to reach the device, limit %v (all: %v)", i, d, limit, took)
		}
	}

	// With the real ingest: write → accepted, end to end.
	startIngest(t, b, ingest.Rights{})
	var e2e []time.Duration
	for i := 0; i < trials; i++ {
		start := time.Now()
		if _, err := a.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: fmt.Sprintf("e2e%d", i), Body: map[string]any{"i": i}}); err != nil {
			t.Fatal(err)
		}
		e2e = append(e2e, waitOutboxEmpty(t, a, 10*time.Second).Sub(start))
	}
	t.Logf("write → accepted through upload, ingest and result: %v", e2e)
	for i, d := range e2e {
		if d > 2*limit {
			t.Fatalf("write %d took %v to be accepted, limit %v (all: %v)", i, d, 2*limit, e2e)
		}
	}
}

// TestAgent_Autosync_CatchesUpAfterOffline: results published while the
// agent was not running are applied when it connects again, without a
// sync.
func TestAgent_Autosync_CatchesUpAfterOffline(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	cfg := testConfig("tab1", "north")
	cfg.BrokerURL, cfg.DataDir = b.URL(), t.TempDir()
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	a, err := Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// A first run: synced, one write uploaded, then the agent stops.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	fstest.Eventually(t, 30*time.Second, func() bool { return settled(a) }, "agent synced")
	m, err := a.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "off", Body: map[string]any{"x": 1}})
	if err != nil {
		t.Fatal(err)
	}
	fstest.Eventually(t, 10*time.Second, func() bool {
		c, err := a.DB().OutboxCounts(ctx)
		return err == nil && c[store.StateSent] == 1
	}, "write uploaded")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a.Close()

	// Meanwhile ingest decides.
	if err := b.Client.PublishResult(ctx, &events.Result{DeviceID: "tab1", MutationID: m.MutationID, Status: events.Accepted,
		Version: 7, At: time.Now().UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	a = startQuietAgent(t, cfg)
	waitOutboxEmpty(t, a, 10*time.Second)
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateUpToDate || st.LastSyncStarted != nil {
		t.Fatalf("status %+v: the result should come from the catch-up, with no sync started", st)
	}
}
