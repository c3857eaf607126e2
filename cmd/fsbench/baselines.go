package main

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// measureConsume reads the whole stream with an ordered consumer over a
// TCP client connection to the broker's port (the connection type the
// agent uses), first without touching the payload, then decoding each
// envelope; it returns both rates in messages per second.
func measureConsume(ctx context.Context, url string, n int) (raw, decoded float64, err error) {
	nc, err := nats.Connect(url, nats.Name("fsbench-consume"))
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, err
	}
	stream, _ := events.OrgStream(benchUnit)
	for pass, decode := range []bool{false, true} {
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return 0, 0, err
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(4000))
		if err != nil {
			return 0, 0, err
		}
		var e events.Envelope
		start := time.Now()
		for i := 0; i < n; i++ {
			m, err := it.Next()
			if err != nil {
				return 0, 0, err
			}
			if decode {
				if err := events.DecodeInto(m.Data(), &e); err != nil {
					return 0, 0, err
				}
			}
		}
		rate := float64(n) / time.Since(start).Seconds()
		it.Stop()
		if pass == 0 {
			raw = rate
		} else {
			decoded = rate
		}
	}
	return raw, decoded, nil
}
