package natsjs_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

// countJSAPI counts the JetStream API requests made on b from now on (by
// any connection): a plain subscription on $JS.API.> sees every one.
func countJSAPI(tb testing.TB, b *fstest.Broker) *atomic.Int64 {
	tb.Helper()
	var n atomic.Int64
	sub, err := b.Client.Conn().Subscribe("$JS.API.>", func(*nats.Msg) { n.Add(1) })
	if err != nil {
		tb.Fatal(err)
	}
	if err := b.Client.Conn().Flush(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sub.Unsubscribe() })
	return &n
}

// deviceClient connects as a device over the network.
func deviceClient(tb testing.TB, b *fstest.Broker) *natsjs.Client {
	tb.Helper()
	return b.ConnectDevice(tb, "tab1", "north")
}

func accepted(mutation string, version uint64) *events.Result {
	return &events.Result{DeviceID: "tab1", MutationID: mutation, Status: events.Accepted, Version: version, At: time.Now().UnixMilli()}
}

func TestClient_SubscribeResults_DeliversAsPublishedWithoutJSAPI(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	dev := deviceClient(t, b)
	api := countJSAPI(t, b)
	sub, err := dev.SubscribeResults("tab1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := dev.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	// Another device's result is not delivered to tab1.
	other := accepted("m0", 1)
	other.DeviceID = "tab2"
	if err := b.Client.PublishResult(ctx, other); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 1; i <= 3; i++ {
		start := time.Now()
		if err := b.Client.PublishResult(ctx, accepted(fmt.Sprintf("m%d", i), uint64(i))); err != nil {
			t.Fatal(err)
		}
		ds, err := sub.Next(ctx, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		for _, d := range ds {
			r, err := events.DecodeResult(d.Data)
			if err != nil {
				t.Fatal(err)
			}
			if d.StreamSeq != 0 {
				t.Fatalf("subscription delivery with stream sequence %d: only a cursor knows it", d.StreamSeq)
			}
			got = append(got, r.DeviceID+"/"+r.MutationID)
		}
		if took > time.Second {
			t.Fatalf("result %d delivered %v after its publish", i, took)
		}
		t.Logf("result %d delivered %v after its publish", i, took)
	}
	if fmt.Sprint(got) != "[tab1/m1 tab1/m2 tab1/m3]" {
		t.Fatalf("delivered %v, want tab1's three results in order", got)
	}
	if n := api.Load(); n != 0 {
		t.Fatalf("%d JetStream API requests while subscribing to and receiving results, want 0", n)
	}
}

func TestResultsSub_Next_ReportsDrops(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	dev := deviceClient(t, b)
	one, err := events.EncodeResult(accepted("m00", 1))
	if err != nil {
		t.Fatal(err)
	}
	// Room for about two results: the rest are dropped, not buffered.
	sub, err := dev.SubscribeResults("tab1", 2*len(one)+len(one)/2)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := dev.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for i := 0; i < 6; i++ {
		if err := b.Client.PublishResult(ctx, accepted(fmt.Sprintf("m%02d", i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	// Every result was routed to the device before its publish was
	// acknowledged; the round trip makes sure the client has read them.
	if err := dev.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	ds, err := sub.Next(ctx, 1<<20)
	if !errors.Is(err, natsjs.ErrResultsDropped) {
		t.Fatalf("Next after overflowing the pending limit: %d deliveries, err %v; want ErrResultsDropped", len(ds), err)
	}
	if len(ds) == 0 { // the drop was reported first: what fit follows
		if ds, err = sub.Next(ctx, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if len(ds) == 0 || len(ds) > 2 {
		t.Fatalf("Next returned %d results, want the 1 or 2 that fit", len(ds))
	}
}
