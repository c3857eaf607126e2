package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
)

type consumersOpts struct {
	devices, r3Devices, units, parallel int
	idle                                time.Duration
}

func newConsumersCmd() *cobra.Command {
	var o consumersOpts
	cmd := &cobra.Command{
		Use:   "consumers",
		Short: "Device durables at fleet size on a 3-node cluster: one replica in memory (the candidate) next to replicated file durables (this build's)",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runConsumers(cmd.Context(), o) },
	}
	cmd.Flags().IntVar(&o.devices, "devices", 10000, "devices whose durables are made one replica in memory")
	cmd.Flags().IntVar(&o.r3Devices, "r3-devices", 1000, "devices whose durables are made as this build makes them (the stream's 3 replicas, file); 0: skip")
	cmd.Flags().IntVar(&o.units, "units", 10, "org units (devices spread evenly)")
	cmd.Flags().IntVar(&o.parallel, "parallel", 32, "durables created at a time")
	cmd.Flags().DurationVar(&o.idle, "idle", 10*time.Second, "idle time measured once all exist")
	return cmd
}

// durablesPerDevice: events, admin and documents on its unit's stream,
// admin on FS_TENANT, and its results durable on FS_RESULTS.
const durablesPerDevice = 5

// consumersRun is one way of holding device durables, measured.
type consumersRun struct {
	name      string
	devices   int
	create    time.Duration
	failed    int64
	firstErr  error
	heap      int64 // bytes of Go heap the durables added (all three nodes: one process)
	routines  int
	idleCPU   float64 // CPU seconds of the process over the idle time
	idleAPI   uint64  // JetStream API requests the nodes served over it
	perNode   []natsserver.JetStreamStats
	idleTaken time.Duration
}

func runConsumers(ctx context.Context, o consumersOpts) error {
	fmt.Printf("device durables on a 3-node JetStream cluster in this process (streams R3, %d org units; %d durables per device: "+
		"3 channels of its unit, tenant admin, results), %d created at a time by the broker identity, each with a device's filter and policies\n",
		o.units, durablesPerDevice, o.parallel)
	var runs []consumersRun
	modes := []struct {
		name    string
		devices int
		r1      bool
	}{{"R1 memory (candidate, not adopted)", o.devices, true}, {"R3 file (this build: natsjs.OpenCursor)", o.r3Devices, false}}
	for _, m := range modes {
		if m.devices == 0 {
			continue
		}
		r, err := consumersOnce(ctx, o, m.devices, m.r1)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		r.name = m.name
		runs = append(runs, r)
		printConsumersRun(r)
	}
	return nil
}

func printConsumersRun(r consumersRun) {
	n := r.devices * durablesPerDevice
	fmt.Printf("\n%s: %d devices, %d durables\n", r.name, r.devices, n)
	fmt.Printf("  created in %.1f s (%.0f durables/s); refused or failed %d  target 0 %s%s\n", r.create.Seconds(), float64(n)/r.create.Seconds(),
		r.failed, verdict(r.failed == 0), map[bool]string{true: fmt.Sprintf(" (first: %v)", r.firstErr)}[r.firstErr != nil])
	for i, s := range r.perNode {
		fmt.Printf("  node %d: consumers %6d, Raft groups (HA assets) %6d   NATS guidance ~2,000 per server  %s\n", i,
			s.Consumers, s.HAAssets, verdict(s.HAAssets <= 2000))
	}
	fmt.Printf("  memory: Go heap +%.1f MiB for the cluster = %.1f KiB per device; goroutines +%d (%.1f per device)\n",
		float64(r.heap)/(1<<20), float64(r.heap)/1024/float64(r.devices), r.routines, float64(r.routines)/float64(r.devices))
	fmt.Printf("  idle %s with every durable in place: process CPU %.2f s (%.1f%% of one core), JetStream API requests %d (%.1f/s)\n",
		r.idleTaken.Round(time.Millisecond), r.idleCPU, 100*r.idleCPU/r.idleTaken.Seconds(), r.idleAPI, float64(r.idleAPI)/r.idleTaken.Seconds())
}

// consumersOnce starts a fresh 3-node cluster, creates the durables of
// devices (R1 in memory through the product's code, or R3 on file) and
// measures them at rest.
func consumersOnce(ctx context.Context, o consumersOpts, devices int, r1 bool) (consumersRun, error) {
	r := consumersRun{devices: devices}
	dir, err := os.MkdirTemp("", "fsbench-consumers-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	units := make([]string, o.units)
	for i := range units {
		units[i] = fmt.Sprintf("u%02d", i)
	}
	nodes, err := startBenchCluster(ctx, dir, units)
	if err != nil {
		return r, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, b := range nodes {
			b.Close(cctx)
		}
	}()
	heap0, routines0 := heapInUse(), runtime.NumGoroutine()
	start := time.Now()
	r.failed, r.firstErr = createDurables(ctx, nodes, units, devices, o.parallel, r1)
	r.create = time.Since(start)
	time.Sleep(2 * time.Second) // placement and Raft groups settle
	r.heap, r.routines = heapInUse()-heap0, runtime.NumGoroutine()-routines0
	api0, err := apiRequests(nodes)
	if err != nil {
		return r, err
	}
	cpu0, t0 := processCPU(), time.Now()
	select {
	case <-time.After(o.idle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.idleCPU, r.idleTaken = processCPU()-cpu0, time.Since(t0)
	api1, err := apiRequests(nodes)
	if err != nil {
		return r, err
	}
	r.idleAPI = api1 - api0
	for _, b := range nodes {
		s, err := b.JetStreamStats()
		if err != nil {
			return r, err
		}
		r.perNode = append(r.perNode, s)
	}
	return r, nil
}

// createDurables creates every device's durables, parallel at a time,
// spread over the nodes' connections; it returns how many failed and the
// first error.
func createDurables(ctx context.Context, nodes []*broker.Broker, units []string, devices, parallel int, r1 bool) (int64, error) {
	var failed atomic.Int64
	var firstErr atomic.Value
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for d := range devices {
		g.Go(func() error {
			c := nodes[d%len(nodes)].Client()
			for _, spec := range deviceSpecs(fmt.Sprintf("dev%05d", d), units[d%len(units)]) {
				if err := createDurable(gctx, c, spec, r1); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return failed.Load(), err
	}
	err, _ := firstErr.Load().(error)
	return failed.Load(), err
}

// deviceSpecs are the cursors a device of unit opens in a full sync.
func deviceSpecs(device, unit string) []natsjs.CursorSpec {
	var specs []natsjs.CursorSpec
	for _, ch := range []events.Channel{events.ChannelEvents, events.ChannelAdmin, events.ChannelDocuments} {
		durable, _ := natsjs.DurableName(device, ch)
		specs = append(specs, natsjs.CursorSpec{Unit: unit, Channel: ch, Durable: durable})
	}
	durable, _ := natsjs.DurableName(device, events.ChannelAdmin)
	specs = append(specs, natsjs.CursorSpec{Unit: "", Channel: events.ChannelAdmin, Durable: durable})
	res, _ := natsjs.ResultsCursorSpec(device, 0)
	return append(specs, res)
}

// createDurable creates spec's durable: through the product's own cursor
// (opened and closed: the stream's replicas, file), or one replica in
// memory with the same filter and policies.
func createDurable(ctx context.Context, c *natsjs.Client, spec natsjs.CursorSpec, r1 bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !r1 {
		cur, err := c.OpenCursor(ctx, spec)
		if err != nil {
			return err
		}
		cur.Close()
		return nil
	}
	stream, filter := spec.Stream, spec.Filter
	if stream == "" {
		stream, _ = events.OrgStream(spec.Unit)
		filter, _ = events.ChannelFilter(spec.Unit, spec.Channel)
	}
	js, err := jetstream.New(c.Conn())
	if err != nil {
		return err
	}
	_, err = js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: spec.Durable, FilterSubject: filter,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: natsjs.DefaultInactiveThreshold, Replicas: 1, MemoryStorage: true})
	return err
}

// startBenchCluster starts three broker nodes (auth on, one authority)
// that route to each other, each waiting for the others.
func startBenchCluster(ctx context.Context, dir string, units []string) ([]*broker.Broker, error) {
	var routes []string
	listens := make([]string, 3)
	for i := range listens {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listens[i] = l.Addr().String()
		l.Close()
		routes = append(routes, "nats-route://"+listens[i])
	}
	auth := filepath.Join(dir, "auth")
	if _, err := natsauth.Open(auth); err != nil {
		return nil, err
	}
	if _, err := natsauth.EnsureRouteSecret(auth); err != nil {
		return nil, err
	}
	nodes := make([]*broker.Broker, 3)
	g, gctx := errgroup.WithContext(ctx)
	for i := range nodes {
		g.Go(func() error {
			cfg := broker.Config{DataDir: filepath.Join(dir, fmt.Sprintf("n%d", i)), AuthPath: auth, HTTPAddr: "127.0.0.1:0",
				OrgUnits: units, ServerName: fmt.Sprintf("n%d", i)}
			cfg.NATS.Port = -1
			cfg.Cluster = broker.ClusterConfig{Name: "fsbench", Listen: listens[i], Routes: routes}
			var err error
			nodes[i], err = broker.Open(gctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			return err
		})
	}
	return nodes, g.Wait()
}

func apiRequests(nodes []*broker.Broker) (uint64, error) {
	var n uint64
	for _, b := range nodes {
		s, err := b.JetStreamStats()
		if err != nil {
			return 0, err
		}
		n += s.APIRequests
	}
	return n, nil
}

// heapInUse is the Go heap in use after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}
