package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
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
	if _, err := natsauth.EnsureRouteSecret(auth.Dir()); err != nil { // as broker-embed init does
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
// history), in order.
func clusterChanges(t *testing.T, c *natsjs.Client, unit string) []*events.Envelope {
	t.Helper()
	bySeq := clusterChangesBySeq(t, c, unit)
	seqs := make([]uint64, 0, len(bySeq))
	for s := range bySeq {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	out := make([]*events.Envelope, 0, len(seqs))
	for _, s := range seqs {
		out = append(out, bySeq[s])
	}
	return out
}

// clusterChangesBySeq reads unit's whole stream through an ordered
// consumer, retrying the read while a new stream's leader settles.
func clusterChangesBySeq(t *testing.T, c *natsjs.Client, unit string) map[uint64]*events.Envelope {
	t.Helper()
	name, _ := events.OrgStream(unit)
	out := map[uint64]*events.Envelope{}
	var last struct{ Err error }
	fstest.Eventually(t, 90*time.Second, func() bool {
		clear(out)
		last.Err = readStream(c, name, func(seq uint64, data []byte) error {
			e, err := events.Decode(data)
			out[seq] = e
			return err
		})
		return last.Err == nil
	}, "read stream %s (last error %v)", name, &last)
	return out
}

// readStream reads stream name from its first message to its last at the
// start, within 30 s (an attempt made while a leader is elected may hang;
// the caller tries again).
func readStream(c *natsjs.Client, name string, fn func(seq uint64, data []byte) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(c.Conn())
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if err := fn(md.Sequence.Stream, m.Data()); err != nil {
				return err
			}
			n++
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("stream %s: nothing fetched with %d left", name, left)
		}
		left -= uint64(n)
	}
	return nil
}

// TestCluster_SyncSurvivesNodeLoss: a device syncing 100,000 records from
// a three-node cluster loses the node it is connected to halfway; it
// continues on another node from its local checkpoint, with no action,
// and ends with exactly the server's state.
func TestCluster_SyncSurvivesNodeLoss(t *testing.T) {
	const records = 100_000
	c := startCluster(t, 3, "north")
	publishRecords(t, c.nodes[0].Client(), "north", records)
	cfg := c.deviceConfig(t, "tab-move", c.urls(), "north")
	cfg.BatchSize = 2000
	a := runClusterAgent(t, cfg)
	var st agent.Status
	fstest.Eventually(t, 120*time.Second, func() bool {
		st, _ = a.Status(context.Background())
		for _, p := range st.Progress {
			if p.Channel == events.ChannelEvents && p.Received >= records/2 {
				return st.Connected
			}
		}
		return false
	}, "half of the records received (last status %+v)", &st)
	killed := -1
	for i, b := range c.nodes {
		if b.ClientURL() == st.Broker {
			killed = i
		}
	}
	if killed < 0 {
		t.Fatalf("agent connected to %q, not one of the nodes %s", st.Broker, c.urls())
	}
	c.stop(t, killed)
	fstest.Eventually(t, 180*time.Second, func() bool {
		st, _ = a.Status(context.Background())
		return !st.OnlineOnly && st.State == agent.StateUpToDate
	}, "the sync completed on another node (last status %+v)", &st)
	if st.Broker == c.nodes[killed].ClientURL() {
		t.Fatalf("still connected to the stopped node %s", st.Broker)
	}
	other := c.nodes[(killed+1)%3].Client()
	requireDeviceEqualsServer(t, a, other, "north", records)
}

// publishRecords publishes n events records to unit, one version each.
func publishRecords(t *testing.T, c *natsjs.Client, unit string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	i := 0
	body := fstest.Body(t, map[string]any{"title": "inspection", "status": "open"})
	got, err := c.Publisher().PublishAll(ctx, func() (*events.Envelope, bool) {
		if i == n {
			return nil, false
		}
		i++
		return &events.Envelope{EventID: fmt.Sprintf("pub-%d", i), OrgUnit: unit, Channel: events.ChannelEvents, Kind: "event",
			RecordID: fmt.Sprintf("ev-%06d", i), Op: events.OpUpsert, Body: body, SchemaVersion: events.SchemaVersion,
			Timestamp: time.Now().UTC()}, true
	}, 500)
	if err != nil || got != n {
		t.Fatalf("published %d of %d: %v", got, n, err)
	}
}

// requireDeviceEqualsServer checks the device holds exactly the n records
// of unit's events channel at the versions the server has: the count,
// the checkpoint at the stream's last sequence, and every record's
// version against the stream (read back in one pass).
func requireDeviceEqualsServer(t *testing.T, a *agent.Agent, c *natsjs.Client, unit string, n int) {
	t.Helper()
	ctx := context.Background()
	server := map[string]uint64{}
	for seq, e := range clusterChangesBySeq(t, c, unit) {
		server[e.RecordID] = seq
	}
	device := map[string]uint64{}
	var after *store.Key
	for {
		recs, err := a.DB().Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: unit, After: after, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			device[r.RecordID] = r.Version
		}
		if len(recs) < 10000 {
			break
		}
		l := recs[len(recs)-1]
		after = &store.Key{OrgUnit: l.OrgUnit, Kind: l.Kind, RecordID: l.RecordID}
	}
	if len(device) != n || len(server) != n {
		t.Fatalf("device holds %d records, server %d, want %d", len(device), len(server), n)
	}
	for id, v := range server {
		if device[id] != v {
			t.Fatalf("record %s: device version %d, server %d", id, device[id], v)
		}
	}
}

// TestCluster_DurableNodeLost: the node leading a device's events durable
// is lost; the device's next sync (the durable answering offline, or not
// at all, while leaders are elected: waited for, or re-created from the
// local checkpoint) ends with exactly the server's state, the durable led
// by a live node.
func TestCluster_DurableNodeLost(t *testing.T) {
	const first, more = 5000, 1000
	c := startCluster(t, 3, "north")
	publishRecords(t, c.nodes[0].Client(), "north", first)
	a := runClusterAgent(t, c.deviceConfig(t, "tab-dur", c.urls(), "north"))
	var st agent.Status
	fstest.Eventually(t, 90*time.Second, func() bool {
		st, _ = a.Status(context.Background())
		return !st.OnlineOnly && st.State == agent.StateUpToDate
	}, "initial sync (last status %+v)", &st)
	durable, _ := natsjs.DurableName("tab-dur", events.ChannelEvents)
	holder := func(via int) string {
		t.Helper()
		js, _ := jetstream.New(c.nodes[via].Client().Conn())
		var name string
		fstest.Eventually(t, 60*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cons, err := js.Consumer(ctx, "FS_ORG_north", durable)
			if err != nil {
				return false
			}
			info := cons.CachedInfo()
			if info.Cluster == nil {
				t.Fatalf("durable %s has no cluster info", durable)
			}
			name = info.Cluster.Leader
			return name != ""
		}, "the node holding %s", durable)
		return name
	}
	lost := -1
	name := holder(0)
	for i, cfg := range c.cfgs {
		if cfg.ServerName == name {
			lost = i
		}
	}
	if lost < 0 {
		t.Fatalf("durable held by %q, not a node of the cluster", name)
	}
	c.stop(t, lost)
	live := (lost + 1) % 3
	publishMore(t, c.nodes[live].Client(), "north", first, more)
	before := time.Now()
	if err := a.RequestSync(agent.ScopeEvents); err != nil {
		t.Fatal(err)
	}
	fstest.Eventually(t, 120*time.Second, func() bool {
		st, _ = a.Status(context.Background())
		return st.LastSyncCompleted != nil && st.LastSyncCompleted.After(before) && st.State == agent.StateUpToDate
	}, "a sync after the durable's node was lost (last status %+v)", &st)
	t.Logf("sync after losing %s took %s", name, st.LastSyncCompleted.Sub(before).Round(time.Millisecond))
	if now := holder(live); now == name {
		t.Fatalf("durable still on the lost node %s", now)
	}
	requireDeviceEqualsServer(t, a, c.nodes[live].Client(), "north", first+more)
}

// publishMore publishes events records from+1 .. from+n of unit. While
// the stream elects a new leader a publish may fail: the whole range goes
// again, deduplicated by its event ids (the stream's duplicates window).
func publishMore(t *testing.T, c *natsjs.Client, unit string, from, n int) {
	t.Helper()
	body := fstest.Body(t, map[string]any{"title": "inspection", "status": "open"})
	var err error
	fstest.Eventually(t, 90*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		i := from
		_, err = c.Publisher().PublishAll(ctx, func() (*events.Envelope, bool) {
			if i == from+n {
				return nil, false
			}
			i++
			return &events.Envelope{EventID: fmt.Sprintf("pub-%d", i), OrgUnit: unit, Channel: events.ChannelEvents, Kind: "event",
				RecordID: fmt.Sprintf("ev-%06d", i), Op: events.OpUpsert, Body: body, SchemaVersion: events.SchemaVersion,
				Timestamp: time.Now().UTC()}, true
		}, 100)
		return err == nil
	}, "publish after the node loss (last error %v)", &err)
}

// restart starts node i again from its data dir (a new client port; the
// same route port), after [testCluster.stop].
func (c *testCluster) restart(t *testing.T, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := broker.Open(ctx, c.cfgs[i], clusterLog)
	if err != nil {
		t.Fatalf("restart node %d: %v", i, err)
	}
	c.mu.Lock()
	c.nodes[i], c.closed[i] = b, false
	c.mu.Unlock()
}

// TestCluster_RollingRestartUnderWrites: three devices write steadily
// while the three nodes are restarted one at a time; uploads keep flowing
// while a node is down, and in the end every write made is in the stream
// exactly once (0 lost, 0 doubled), all accepted.
func TestCluster_RollingRestartUnderWrites(t *testing.T) {
	c := startCluster(t, 3, "north")
	var agents []*agent.Agent
	for i := range 3 {
		cfg := c.deviceConfig(t, fmt.Sprintf("roll%d", i), c.urls(), "north")
		cfg.AutosyncInterval = 200 * time.Millisecond
		agents = append(agents, runClusterAgent(t, cfg))
	}
	for _, a := range agents {
		fstest.Eventually(t, 60*time.Second, func() bool {
			st, _ := a.Status(context.Background())
			return !st.OnlineOnly
		}, "initial sync")
	}
	ctx, stopWriting := context.WithCancel(context.Background())
	written := make([]int, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond) // 20 writes/s per device
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := a.Write(context.Background(), agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event",
					RecordID: fmt.Sprintf("roll-%d-%05d", i, n), Body: map[string]any{"n": n}}); err != nil {
					t.Errorf("device %d write %d: %v", i, n, err)
					return
				}
				written[i]++
			}
		}()
	}
	accepted := func() int {
		n := 0
		for _, a := range agents {
			st, _ := a.Status(context.Background())
			n += st.Channels[0].Records
		}
		return n
	}
	time.Sleep(2 * time.Second)
	for i := range c.nodes {
		c.stop(t, i)
		before := clusterMutations(t, c.nodes[(i+1)%3].Client(), "north")
		time.Sleep(3 * time.Second) // writes go on with node i down
		during := clusterMutations(t, c.nodes[(i+1)%3].Client(), "north")
		if during <= before {
			t.Fatalf("node %d down: no upload applied in 3 s (%d mutations before, %d after)", i, before, during)
		}
		c.restart(t, i)
		time.Sleep(2 * time.Second)
	}
	stopWriting()
	wg.Wait()
	total := 0
	for i, a := range agents {
		fstest.Eventually(t, 120*time.Second, func() bool {
			st, _ := a.Status(context.Background())
			return st.PendingWrites == 0
		}, "device %d's writes decided", i)
		if st, _ := a.Status(context.Background()); st.SyncErrors != 0 {
			t.Fatalf("device %d: %d sync errors, want every write accepted", i, st.SyncErrors)
		}
		total += written[i]
	}
	seen := map[string]int{}
	for _, e := range clusterChanges(t, c.nodes[0].Client(), "north") {
		if e.Origin.DeviceID != "" {
			seen[e.Origin.DeviceID+"/"+e.Origin.MutationID]++
		}
	}
	doubled := 0
	for _, n := range seen {
		doubled += n - 1
	}
	t.Logf("%d writes during the rolling restart: %d in the stream, %d doubled; %d records on the devices", total, len(seen), doubled, accepted())
	if len(seen) != total || doubled != 0 {
		t.Fatalf("%d writes made, %d distinct in the stream (lost %d), %d doubled", total, len(seen), total-len(seen), doubled)
	}
}

// clusterMutations counts the device writes in unit's stream.
func clusterMutations(t *testing.T, c *natsjs.Client, unit string) int {
	t.Helper()
	n := 0
	for _, e := range clusterChangesBySeq(t, c, unit) {
		if e.Origin.DeviceID != "" {
			n++
		}
	}
	return n
}

// TestCluster_RoutesRefuseStrangers: a server that reaches a node's route
// port without the cluster's route secret is refused (it would otherwise
// join and see every stream); one holding the secret is let in, so the
// refusal is the secret's doing.
func TestCluster_RoutesRefuseStrangers(t *testing.T) {
	c := startCluster(t, 3, "north")
	secret, err := natsauth.RouteSecret(c.auth.Dir())
	if err != nil {
		t.Fatal(err)
	}
	join := func(userinfo string) *natsd.Server {
		t.Helper()
		route, err := url.Parse("nats-route://" + userinfo + c.cfgs[0].Cluster.Listen)
		if err != nil {
			t.Fatal(err)
		}
		s, err := natsd.NewServer(&natsd.Options{ServerName: "stranger-" + userinfo, Host: "127.0.0.1", Port: -1, NoSigs: true,
			Cluster: natsd.ClusterOpts{Name: "fstest", Host: "127.0.0.1", Port: -1}, Routes: []*url.URL{route}})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(s.Shutdown)
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("stranger not ready")
		}
		return s
	}
	none, wrong := join(""), join(natsauth.RouteUser+":not-the-secret@")
	right := join(natsauth.RouteUser + ":" + secret + "@")
	fstest.Eventually(t, 20*time.Second, func() bool { return right.NumRoutes() > 0 }, "the server with the route secret routed")
	time.Sleep(3 * time.Second) // the strangers have retried meanwhile
	if n := none.NumRoutes(); n != 0 {
		t.Fatalf("a server without credentials has %d routes into the cluster", n)
	}
	if n := wrong.NumRoutes(); n != 0 {
		t.Fatalf("a server with a wrong route secret has %d routes into the cluster", n)
	}
}
