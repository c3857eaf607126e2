package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
)

type writesOpts struct {
	devices  int
	rate     int
	duration time.Duration
	burst    int
}

func newWritesCmd() *cobra.Command {
	var o writesOpts
	cmd := &cobra.Command{
		Use:   "writes",
		Short: "Device write → accepted result latency under load, and max ingest throughput",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runWrites(cmd.Context(), o) },
	}
	cmd.Flags().IntVar(&o.devices, "devices", 10, "simulated devices")
	cmd.Flags().IntVar(&o.rate, "rate", 1000, "writes per second, all devices together")
	cmd.Flags().DurationVar(&o.duration, "duration", 30*time.Second, "how long to sustain the rate")
	cmd.Flags().IntVar(&o.burst, "burst", 50000, "mutations queued for the throughput run")
	return cmd
}

func runWrites(ctx context.Context, o writesOpts) error {
	dir, err := os.MkdirTemp("", "fsbench-writes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := natsserver.Start(ctx, natsserver.Config{Name: "bench", Port: -1, StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		return err
	}
	defer srv.Close(context.Background())
	nc, err := srv.Connect("fsbench-broker")
	if err != nil {
		return err
	}
	broker, _ := natsjs.NewClient(nc)
	if err := broker.Provision(ctx, []string{benchUnit}, natsjs.StreamPolicy{}); err != nil {
		return err
	}
	if err := broker.ProvisionIngest(ctx, natsjs.IngestPolicy{}); err != nil {
		return err
	}
	fmt.Printf("write benchmark: %d devices, %d writes/s for %s; throughput run of %d mutations\n", o.devices, o.rate, o.duration, o.burst)
	rawP50, rawP99, err := rawRoundTrip(ctx, srv.ClientURL())
	if err != nil {
		return err
	}
	stop := startBenchIngest(broker)
	lat, err := sustainedLatency(ctx, srv.ClientURL(), o)
	stop()
	if err != nil {
		return err
	}
	tput, err := ingestThroughput(ctx, srv.ClientURL(), broker, o.burst)
	if err != nil {
		return err
	}
	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	fmt.Println()
	fmt.Printf("raw JetStream publish→ack round trip (device connection): p50 %6.2f ms  p99 %6.2f ms\n", ms(rawP50), ms(rawP99))
	fmt.Printf("write → accepted result on the device, %d/s sustained:   p50 %6.2f ms  p99 %6.2f ms   target p99 <= 25 ms %s  (%d writes)\n",
		o.rate, ms(p50), ms(p99), verdict(p99 <= 25*time.Millisecond), len(lat))
	fmt.Printf("max ingest throughput: %.0f mutations/s                              target >= 10000/s  %s\n", tput, verdict(tput >= 10000))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
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
// stream's ack) from a device connection.
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
