package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/feed"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/seed"
)

func newFeedCmd() *cobra.Command {
	var records int
	cmd := &cobra.Command{
		Use:   "feed [--records N]",
		Short: "One integration consuming N changes through package feed, next to raw JetStream consumes of the same stream",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runFeedBench(cmd.Context(), records)
		},
	}
	cmd.Flags().IntVar(&records, "records", 1_000_000, "changes in the org unit stream")
	return cmd
}

// runFeedBench seeds one unit with records events on a broker with auth
// on, then reads them all three ways over TCP, each with its own
// credentials: (a) an ordered consumer, no acks (the raw consume rate);
// (b) a durable with explicit acks, plain jetstream (the strongest way to
// get the feed's guarantees); (c) package feed with a handler that only
// counts.
func runFeedBench(ctx context.Context, records int) error {
	dir, err := os.MkdirTemp("", "fsbench-feed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := broker.Config{DataDir: filepath.Join(dir, "broker"), HTTPAddr: "127.0.0.1:0", OrgUnits: []string{benchUnit}}
	cfg.NATS.Port = -1
	b, err := broker.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer b.Close(context.Background())
	fmt.Printf("feed benchmark: %d changes (~300 B bodies) in one org unit stream, read over TCP with auth on\n", records)
	gen, err := seed.New(seed.Spec{Org: benchUnit, Events: records})
	if err != nil {
		return err
	}
	start := time.Now()
	if n, err := b.Client().Publisher().PublishAll(ctx, gen.Next, 4000); err != nil || n != records {
		return fmt.Errorf("seeded %d of %d: %v", n, records, err)
	}
	fmt.Printf("  seeded in %s\n", time.Since(start).Round(time.Millisecond))
	raw, err := rawOrdered(ctx, b, records)
	if err != nil {
		return err
	}
	acked, err := rawDurable(ctx, b, records)
	if err != nil {
		return err
	}
	got, err := throughFeed(ctx, b, records)
	if err != nil {
		return err
	}
	fmt.Printf("(a) raw ordered consumer, no acks:                 %8.0f changes/s\n", raw)
	fmt.Printf("(b) raw durable, explicit ack per change:          %8.0f changes/s\n", acked)
	fmt.Printf("(c) package feed (decode, handler, ack):           %8.0f changes/s   %.2f of (b), %.2f of (a)\n", got, got/acked, got/raw)
	return nil
}

// rate times read until it returns n.
func rate(n int, read func() error) (float64, error) {
	start := time.Now()
	if err := read(); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func tailConn(b *broker.Broker) (*nats.Conn, error) {
	userJWT, seed, err := b.Authority().Component(natsauth.RoleTail)
	if err != nil {
		return nil, err
	}
	return nats.Connect(b.ClientURL(), nats.UserJWTAndSeed(userJWT, seed))
}

func rawOrdered(ctx context.Context, b *broker.Broker, n int) (float64, error) {
	nc, err := tailConn(b)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, _ := events.OrgStream(benchUnit)
	return rate(n, func() error {
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return err
		}
		return consumeN(cons, n, false)
	})
}

// consumeN reads n messages of cons (8 MiB prefetch), acknowledging each
// with ack.
func consumeN(cons jetstream.Consumer, n int, ack bool) error {
	it, err := cons.Messages(jetstream.PullMaxBytes(8 << 20))
	if err != nil {
		return err
	}
	defer it.Stop()
	for range n {
		m, err := it.Next()
		if err != nil {
			return err
		}
		if ack {
			if err := m.Ack(); err != nil {
				return err
			}
		}
	}
	return nil
}

// integrationConn connects as a new integration name of the bench unit.
func integrationConn(b *broker.Broker, name string) (*natsjs.Client, error) {
	creds, _, _, err := b.Authority().AddIntegration(name, []string{benchUnit})
	if err != nil {
		return nil, err
	}
	path := filepath.Join(filepath.Dir(b.Authority().Dir()), name+".creds")
	if err := natsauth.WriteCreds(path, creds); err != nil {
		return nil, err
	}
	inbox, _ := events.IntegrationInboxPrefix(name)
	return natsjs.Connect(b.ClientURL(), natsjs.ConnectOptions{Name: name, Credentials: path, InboxPrefix: inbox})
}

func rawDurable(ctx context.Context, b *broker.Broker, n int) (float64, error) {
	c, err := integrationConn(b, "rawbench")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	js, _ := jetstream.New(c.Conn())
	stream, _ := events.OrgStream(benchUnit)
	name, _ := natsjs.IntegrationDurableName("rawbench", events.ChannelEvents)
	filter, _ := events.ChannelFilter(benchUnit, events.ChannelEvents)
	return rate(n, func() error {
		cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy,
			FilterSubject: filter, MaxAckPending: 1000})
		if err != nil {
			return err
		}
		return consumeN(cons, n, true)
	})
}

func throughFeed(ctx context.Context, b *broker.Broker, n int) (float64, error) {
	c, err := integrationConn(b, "feedbench")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var count atomic.Int64
	run, stop := context.WithCancel(ctx)
	defer stop()
	sub := feed.New(c, feed.Options{Integration: "feedbench", Units: []string{benchUnit}, Channels: []events.Channel{events.ChannelEvents},
		Log: slog.New(slog.DiscardHandler)}, func(context.Context, feed.Change) error {
		if count.Add(1) == int64(n) {
			stop()
		}
		return nil
	})
	return rate(n, func() error { return sub.Run(run) })
}
