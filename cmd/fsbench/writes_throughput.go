package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
)

// throughput is the second half of the write benchmark: the raw JetStream
// round trip (reference) and ingest's maximum rate on a fresh server.
type throughput struct {
	rawP50, rawP99 time.Duration
	rate           float64 // mutations per second
}

func measureThroughput(ctx context.Context, dir string, burst int) (throughput, error) {
	var t throughput
	srv, err := natsserver.Start(ctx, natsserver.Config{Name: "bench", Port: -1, StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		return t, err
	}
	defer srv.Close(context.Background())
	nc, err := srv.Connect("fsbench-broker")
	if err != nil {
		return t, err
	}
	defer nc.Close()
	broker, _ := natsjs.NewClient(nc)
	if err := broker.Provision(ctx, []string{benchUnit}, natsjs.StreamPolicy{}); err != nil {
		return t, err
	}
	// 5,000 uploads of each burst device wait at once: no per-device quota
	// on this server (the quota is 1,000 by default).
	if err := broker.ProvisionIngest(ctx, natsjs.IngestPolicy{DevicePendingUploads: -1}); err != nil {
		return t, err
	}
	if t.rawP50, t.rawP99, err = rawRoundTrip(ctx, srv.ClientURL()); err != nil {
		return t, err
	}
	t.rate, err = ingestThroughput(ctx, srv.ClientURL(), broker, burst)
	return t, err
}

func startBenchIngest(c *natsjs.Client) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ingest.New(c, ingest.Options{}).Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "ingest:", err)
		}
	}()
	return func() { cancel(); <-done }
}

// rawRoundTrip times 2,000 plain JetStream publishes (publish, wait for the
// stream's ack) from a device's TCP connection.
func rawRoundTrip(ctx context.Context, url string) (time.Duration, time.Duration, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}}); err != nil {
		return 0, 0, err
	}
	var lat []time.Duration
	data := make([]byte, 300)
	for i := 0; i < 2000; i++ {
		t0 := time.Now()
		if _, err := js.Publish(ctx, fmt.Sprintf("raw.%d", i%100), data); err != nil {
			return 0, 0, err
		}
		lat = append(lat, time.Since(t0))
	}
	return percentile(lat, 50), percentile(lat, 99), nil
}

func mutation(device string, i int) *events.Envelope {
	body, _ := msgpack.Marshal(map[string]any{"title": "inspection note", "n": i, "status": "open"})
	mut := fmt.Sprintf("m%08d", i)
	return &events.Envelope{EventID: mut, OrgUnit: benchUnit, Channel: events.ChannelEvents, Kind: "event",
		RecordID: fmt.Sprintf("%s-r%06d", device, i), Op: events.OpUpsert, Body: body, SchemaVersion: events.SchemaVersion,
		Timestamp: time.Now(), Origin: events.Origin{DeviceID: device, MutationID: mut}}
}

// ingestThroughput queues n uploads with ingest stopped, then starts it and
// times until every result exists.
func ingestThroughput(ctx context.Context, url string, broker *natsjs.Client, n int) (float64, error) {
	c, err := natsjs.Connect(url, natsjs.ConnectOptions{Name: "burst"})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	before, err := resultCount(ctx, broker)
	if err != nil {
		return 0, err
	}
	if err := queueUploads(ctx, c, n); err != nil {
		return 0, err
	}
	stop := startBenchIngest(broker)
	defer stop()
	start := time.Now()
	for {
		got, err := resultCount(ctx, broker)
		if err != nil {
			return 0, err
		}
		if got-before >= uint64(n) {
			return float64(n) / time.Since(start).Seconds(), nil
		}
		if time.Since(start) > 5*time.Minute {
			return 0, fmt.Errorf("only %d of %d results after 5 minutes", got-before, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func queueUploads(ctx context.Context, c *natsjs.Client, n int) error {
	const page = 500 // as the agent uploads: its client sets the address header
	for i := 0; i < n; i += page {
		var es []*events.Envelope
		for j := i; j < min(i+page, n); j++ {
			es = append(es, mutation(fmt.Sprintf("burst%02d", j%10), 10_000_000+j))
		}
		if sent, err := c.PublishUploads(ctx, es); err != nil {
			return fmt.Errorf("queue uploads: %d of page %d stored: %w", sent, i/page, err)
		}
	}
	return nil
}

func resultCount(ctx context.Context, c *natsjs.Client) (uint64, error) {
	st, err := c.StreamState(ctx, events.ResultStream)
	return st.Msgs, err
}
