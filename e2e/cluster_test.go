package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
)

// testCluster is three broker nodes on loopback sharing one authority, as
// `broker-embed init` and three `broker-embed run` would set them up.
type testCluster struct {
	nodes  []*broker.Broker
	cfgs   []broker.Config
	auth   *natsauth.Authority
	closed []bool
	mu     sync.Mutex
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var clusterLog = slog.New(slog.NewTextHandler(os.Stderr, nil))

// startCluster starts n nodes at once (each waits for a majority).
func startCluster(t *testing.T, n int, units ...string) *testCluster {
	t.Helper()
	root := t.TempDir()
	auth, err := natsauth.Open(filepath.Join(root, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{auth: auth, nodes: make([]*broker.Broker, n), closed: make([]bool, n)}
	var routes []string
	ports := make([]int, n)
	for i := range n {
		ports[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i]))
	}
	for i := range n {
		cfg := broker.Config{DataDir: filepath.Join(root, fmt.Sprintf("n%d", i)), AuthPath: auth.Dir(), HTTPAddr: "127.0.0.1:0",
			OrgUnits: units, ServerName: fmt.Sprintf("n%d", i)}
		cfg.NATS.Port = -1
		cfg.NATS.Logging = os.Getenv("FS_CLUSTER_LOG") != ""
		cfg.Cluster = broker.ClusterConfig{Name: "fstest", Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes}
		c.cfgs = append(c.cfgs, cfg)
	}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			b, err := broker.Open(ctx, c.cfgs[i], clusterLog)
			c.nodes[i] = b
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("cluster node: %v", err)
		}
	}
	t.Cleanup(func() {
		for i := range n {
			c.stop(t, i)
		}
	})
	return c
}

// stop shuts node i down (its clients see the connection drop).
func (c *testCluster) stop(t *testing.T, i int) {
	c.mu.Lock()
	done := c.closed[i]
	c.closed[i] = true
	c.mu.Unlock()
	if done || c.nodes[i] == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c.nodes[i].Close(ctx)
}

func (c *testCluster) urls() string {
	var u []string
	for _, b := range c.nodes {
		u = append(u, b.ClientURL())
	}
	return strings.Join(u, ",")
}

// deviceConfig is an agent of units with its own credentials, connecting
// to url (one node, or the comma-separated list of all).
func (c *testCluster) deviceConfig(t *testing.T, device, url string, units ...string) agent.Config {
	t.Helper()
	off := false
	cfg := agent.Config{DeviceID: device, OrgUnits: units, BrokerURL: url, DataDir: t.TempDir(), RefreshMode: &off,
		StallTimeout: 10 * time.Second}.WithDefaults()
	cfg.Credentials = fstest.MustDeviceCreds(t, c.auth, device, units...)
	return cfg
}

func runClusterAgent(t *testing.T, cfg agent.Config) *agent.Agent {
	t.Helper()
	a, err := agent.Open(context.Background(), cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		a.Close()
	})
	return a
}

// TestCluster_IngestOnce: three devices, each connected to another node,
// write new records and chains of edits while ingest runs on all three
// nodes; every mutation is applied exactly once and accepted.
func TestCluster_IngestOnce(t *testing.T) {
	c := startCluster(t, 3, "north")
	const writes, chain = 60, 12 // a chain within the stream's 16 versions of history: all checkable
	var agents []*agent.Agent
	for i, b := range c.nodes {
		agents = append(agents, runClusterAgent(t, c.deviceConfig(t, fmt.Sprintf("tab%d", i), b.ClientURL(), "north")))
	}
	for _, a := range agents {
		fstest.Eventually(t, 60*time.Second, func() bool {
			st, _ := a.Status(context.Background())
			return !st.OnlineOnly
		}, "initial sync")
	}
	ctx := context.Background()
	for i, a := range agents {
		for j := range writes {
			id := fmt.Sprintf("r-%d-%d", i, j)
			if _, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: id,
				Body: map[string]any{"n": j}}); err != nil {
				t.Fatal(err)
			}
		}
		for j := range chain { // chained edits of one record: each builds on the one before
			if _, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event",
				RecordID: fmt.Sprintf("chain-%d", i), Body: map[string]any{"rev": j}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, a := range agents {
		fstest.Eventually(t, 90*time.Second, func() bool {
			st, _ := a.Status(ctx)
			return st.PendingWrites == 0
		}, "device %d's writes decided", i)
		if st, _ := a.Status(ctx); st.SyncErrors != 0 {
			t.Fatalf("device %d: %d sync errors, want every write accepted", i, st.SyncErrors)
		}
	}
	seen := map[string]int{}
	for _, e := range clusterChanges(t, c.nodes[0].Client(), "north") {
		if e.Origin.DeviceID != "" {
			seen[e.Origin.DeviceID+"/"+e.Origin.MutationID]++
		}
	}
	if want := len(agents) * (writes + chain); len(seen) != want {
		t.Fatalf("%d distinct mutations in the stream, want %d", len(seen), want)
	}
	for m, n := range seen {
		if n != 1 {
			t.Fatalf("mutation %s applied %d times", m, n)
		}
	}
}

// clusterChanges reads every change of unit's stream (all of its
// history), message by message.
func clusterChanges(t *testing.T, c *natsjs.Client, unit string) []*events.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(c.Conn())
	if err != nil {
		t.Fatal(err)
	}
	name, _ := events.OrgStream(unit)
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []*events.Envelope
	for seq := s.CachedInfo().State.FirstSeq; seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d of %s: %v", seq, name, err)
		}
		e, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}
