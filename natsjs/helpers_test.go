package natsjs_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

const ev = events.ChannelEvents

// testCtx returns a context that ends with the test or after 15 s.
func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// mustJS returns a raw JetStream handle on the broker's connection, for
// inspecting and manipulating streams behind the package's back.
func mustJS(tb testing.TB, b *fstest.Broker) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(b.Client.Conn())
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

func mustStreamInfo(tb testing.TB, b *fstest.Broker, name string) *jetstream.StreamInfo {
	tb.Helper()
	ctx := testCtx(tb)
	s, err := mustJS(tb, b).Stream(ctx, name)
	if err != nil {
		tb.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatalf("stream %s info: %v", name, err)
	}
	return info
}

func u64(v uint64) *uint64 { return &v }

// publishEvent publishes an upsert of events record id of unit and returns
// its version.
func publishEvent(tb testing.TB, b *fstest.Broker, unit, id string, rev int) uint64 {
	tb.Helper()
	return b.MustPublish(tb, fstest.Change(tb, unit, ev, "event", id, map[string]any{"rev": rev}))
}

// mustOpenCursor opens a cursor with a short stall timeout and closes it at
// the end of the test.
func mustOpenCursor(tb testing.TB, b *fstest.Broker, spec natsjs.CursorSpec) *natsjs.Cursor {
	tb.Helper()
	if spec.StallTimeout == 0 {
		spec.StallTimeout = 5 * time.Second
	}
	c, err := b.Client.OpenCursor(testCtx(tb), spec)
	if err != nil {
		tb.Fatalf("open cursor %+v: %v", spec, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// drain reads c until it is caught up and returns every delivery.
func drain(tb testing.TB, c *natsjs.Cursor) []natsjs.Delivery {
	tb.Helper()
	ctx := testCtx(tb)
	var out []natsjs.Delivery
	for i := 0; !c.CaughtUp(); i++ {
		if i > 1000 {
			tb.Fatalf("cursor not caught up after %d reads (%d deliveries)", i, len(out))
		}
		ds, err := c.Next(ctx, 50)
		if err != nil {
			tb.Fatalf("next after %d deliveries: %v", len(out), err)
		}
		out = append(out, ds...)
	}
	return out
}

func seqs(ds []natsjs.Delivery) []uint64 {
	out := make([]uint64, len(ds))
	for i, d := range ds {
		out[i] = d.StreamSeq
	}
	return out
}
