package feed_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/feed"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

// seen records what a handler got, per record, in order.
type seen struct {
	mu    sync.Mutex
	by    map[string][]uint64 // record id -> versions
	total int
	dups  int // deliveries marked as possibly handled before
}

func (s *seen) handler(stopAt int, stop context.CancelFunc) feed.Handler {
	return func(_ context.Context, c feed.Change) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.by == nil {
			s.by = map[string][]uint64{}
		}
		s.by[c.Envelope.RecordID] = append(s.by[c.Envelope.RecordID], c.Version)
		s.total++
		if c.Delivered > 1 {
			s.dups++
		}
		if s.total == stopAt {
			stop()
		}
		return nil
	}
}

func runFor(t *testing.T, sub *feed.Subscription, ctx context.Context) {
	t.Helper()
	if err := sub.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestSubscription_Run_OrderAndResume: an integration consuming while
// server changes and accepted device writes are published gets every
// change in per-record order; stopped after 40 and run again, it resumes
// with no gap and no duplicate beyond the deliveries marked as repeated.
func TestSubscription_Run_OrderAndResume(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go ingest.New(b.IngestClient(t), ingest.Options{Log: quiet()}).Run(ctx)
	dev := b.ConnectDevice(t, "tab1", "north")
	c := b.ConnectIntegration(t, "report", "north")
	opts := feed.Options{Integration: "report", Units: []string{"north"}, Channels: []events.Channel{events.ChannelEvents}, Log: quiet()}

	var s seen
	first, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); runFor(t, feed.New(c, opts, s.handler(40, stop)), first) }()
	const rounds = 20
	for i := range rounds { // 3 changes per round: two server changes, one device write
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("r%d", i%4), map[string]any{"i": i}))
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("s%d", i), map[string]any{"i": i}))
		e := fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("d%d", i), map[string]any{"i": i})
		e.Origin = events.Origin{DeviceID: "tab1", MutationID: fmt.Sprintf("m%d", i)}
		if _, err := dev.PublishUpload(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	want := 3 * rounds
	fstest.Eventually(t, 20*time.Second, func() bool {
		st, err := b.Client.UnitState(ctx, "north")
		return err == nil && st.Msgs == uint64(want)
	}, "all %d changes in the stream (ingest applied the device writes)", want)

	again, stop2 := context.WithCancel(ctx)
	var rest seen
	runFor(t, feed.New(c, opts, rest.handler(want-s.total+rest.dups, stop2)), againWithTimeout(t, again, stop2, &rest, want-s.total))

	all := map[string][]uint64{}
	for _, r := range []*seen{&s, &rest} {
		for id, vs := range r.by {
			all[id] = append(all[id], vs...)
		}
	}
	total, extra := 0, s.dups+rest.dups
	for id, vs := range all {
		for i := 1; i < len(vs); i++ {
			if vs[i] < vs[i-1] || (vs[i] == vs[i-1] && extra == 0) {
				t.Fatalf("record %s: versions %v out of order or repeated unmarked", id, vs)
			}
		}
		total += len(vs)
	}
	if total < want || total > want+extra {
		t.Fatalf("handled %d changes (%d, then %d; %d marked as repeated), want all %d", total, s.total, rest.total, extra, want)
	}
	if d := len(all["d0"]) + len(all["d19"]); d < 2 {
		t.Fatalf("accepted device writes missing from the feed: d0 %v, d19 %v", all["d0"], all["d19"])
	}
	t.Logf("first run %d changes, resumed run %d, %d redelivered", s.total, rest.total, extra)
}

// againWithTimeout ends the resumed run once it has the rest, or after 15 s.
func againWithTimeout(t *testing.T, ctx context.Context, stop context.CancelFunc, r *seen, left int) context.Context {
	go func() {
		deadline := time.After(15 * time.Second)
		for {
			r.mu.Lock()
			n := r.total
			r.mu.Unlock()
			select {
			case <-deadline:
				stop()
				return
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			if n >= left {
				time.Sleep(200 * time.Millisecond) // room for a duplicate to show: the check counts them
				stop()
				return
			}
		}
	}()
	return ctx
}

// TestSubscription_Run_DeadLetters: a handler failing on one change tries
// it MaxTries times, then the change goes to the dead letters and the
// changes after it keep flowing; a restart does not see it again.
func TestSubscription_Run_DeadLetters(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := b.ConnectIntegration(t, "report", "north")
	for _, id := range []string{"a", "bad", "b", "c"} {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"id": id}))
	}
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	var mu sync.Mutex
	tries := map[string]int{}
	var order []string
	run, stop := context.WithCancel(ctx)
	h := func(_ context.Context, ch feed.Change) error {
		mu.Lock()
		defer mu.Unlock()
		id := ch.Envelope.RecordID
		tries[id]++
		if id == "bad" {
			return errors.New("the report cannot take it")
		}
		order = append(order, id)
		if id == "c" {
			stop()
		}
		return nil
	}
	opts := feed.Options{Integration: "report", Units: []string{"north"}, Channels: []events.Channel{events.ChannelEvents}, MaxTries: 3,
		RetryInitial: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond, DeadLetters: feed.FileDeadLetters(path), Log: quiet()}
	runFor(t, feed.New(c, opts, h), run)
	if tries["bad"] != 3 || fmt.Sprint(order) != "[a b c]" {
		t.Fatalf("tried bad %d times (want 3), handled %v (want [a b c])", tries["bad"], order)
	}
	lines := readLines(t, path)
	if len(lines) != 1 || lines[0]["record"] != "bad" || lines[0]["tries"] != float64(3) || lines[0]["error"] != "the report cannot take it" {
		t.Fatalf("dead letters %v, want bad after 3 tries with the handler's error", lines)
	}
	// Resumed: nothing again, not even the dead-lettered change.
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "d", map[string]any{"id": "d"}))
	order = nil
	run2, stop2 := context.WithCancel(ctx)
	h2 := func(ctx context.Context, ch feed.Change) error {
		err := h(ctx, ch)
		if ch.Envelope.RecordID == "d" {
			stop2()
		}
		return err
	}
	runFor(t, feed.New(c, opts, h2), run2)
	if fmt.Sprint(order) != "[d]" || tries["bad"] != 3 {
		t.Fatalf("resumed run handled %v (bad tried %d times in all), want only [d]", order, tries["bad"])
	}
}

// TestSubscription_Run_StopsOnNewerSchema: a change of a newer envelope
// schema stops the subscription with ErrUnreadable and stays unacknowledged.
func TestSubscription_Run_StopsOnNewerSchema(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	future := fstest.EnvelopeBytes(t, fstest.Change(t, "north", events.ChannelEvents, "event", "future", map[string]any{"x": 1}), events.SchemaVersion+1)
	if _, err := b.Client.Publisher().PublishRaw(ctx, "fs.org.north.events.event.future", future); err != nil {
		t.Fatal(err)
	}
	c := b.ConnectIntegration(t, "report", "north")
	opts := feed.Options{Integration: "report", Units: []string{"north"}, Channels: []events.Channel{events.ChannelEvents}, Log: quiet()}
	called := false
	for range 2 {
		err := feed.New(c, opts, func(context.Context, feed.Change) error { called = true; return nil }).Run(ctx)
		if !errors.Is(err, feed.ErrUnreadable) {
			t.Fatalf("run over a newer schema: %v, want ErrUnreadable", err)
		}
	}
	if called {
		t.Fatal("the handler got a change this build cannot read")
	}
}

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("dead letter line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestSubscription_Run_SlowHandler: a handler running longer than the ack
// wait keeps its change in progress: it is delivered once, and Lag says
// what is left behind it.
func TestSubscription_Run_SlowHandler(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"slow", "next"} {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"id": id}))
	}
	c := b.ConnectIntegration(t, "report", "north")
	var mu sync.Mutex
	got := map[string][]uint64{}
	var lagWhileSlow map[string]uint64
	run, stop := context.WithCancel(ctx)
	var sub *feed.Subscription
	sub = feed.New(c, feed.Options{Integration: "report", Units: []string{"north"}, Channels: []events.Channel{events.ChannelEvents},
		AckWait: time.Second, Log: quiet()}, func(_ context.Context, ch feed.Change) error {
		mu.Lock()
		got[ch.Envelope.RecordID] = append(got[ch.Envelope.RecordID], ch.Delivered)
		mu.Unlock()
		if ch.Envelope.RecordID == "slow" {
			lagWhileSlow = sub.Lag()
			time.Sleep(2500 * time.Millisecond) // longer than the ack wait: what the test is about
		}
		if ch.Envelope.RecordID == "next" {
			time.AfterFunc(1500*time.Millisecond, stop) // room for a redelivery of slow to show
		}
		return nil
	})
	runFor(t, sub, run)
	if fmt.Sprint(got["slow"]) != "[1]" || fmt.Sprint(got["next"]) != "[1]" {
		t.Fatalf("deliveries (by delivery count) %v, want slow and next once each", got)
	}
	if lagWhileSlow["north/events"] != 1 {
		t.Fatalf("lag while handling slow %v, want north/events 1", lagWhileSlow)
	}
}

// TestSubscription_Run_Start: a new durable starts at the beginning, at a
// time, at a sequence or now, as Options.Start says.
func TestSubscription_Run_Start(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var versions []uint64
	for _, id := range []string{"e0", "e1"} {
		versions = append(versions, b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"id": id})))
	}
	time.Sleep(20 * time.Millisecond) // e0, e1 before the start time, e2, e3 after: distinct times, not synchronisation
	at := time.Now()
	for _, id := range []string{"e2", "e3"} {
		versions = append(versions, b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"id": id})))
	}
	js, err := jetstream.New(b.Client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		start natsjs.FeedStart
		want  string
		later bool // publish e4 after starting (for Now)
	}{
		{"beginning", natsjs.FeedStart{}, "[e0 e1 e2 e3]", false},
		{"time", natsjs.FeedStart{Time: at}, "[e2 e3]", false},
		{"sequence", natsjs.FeedStart{Sequence: versions[1]}, "[e1 e2 e3]", false},
		{"now", natsjs.FeedStart{Now: true}, "[e4]", true},
	} {
		name := "start" + c.name
		cl := b.ConnectIntegration(t, name, "north")
		var got []string
		run, stop := context.WithCancel(ctx)
		want := strings.Count(c.want, "e")
		sub := feed.New(cl, feed.Options{Integration: name, Units: []string{"north"}, Channels: []events.Channel{events.ChannelEvents},
			Start: c.start, Log: quiet()}, func(_ context.Context, ch feed.Change) error {
			got = append(got, ch.Envelope.RecordID)
			if len(got) == want {
				stop()
			}
			return nil
		})
		done := make(chan error, 1)
		go func() { done <- sub.Run(run) }()
		if c.later { // e4 once the durable exists: what "now" means
			durable, _ := natsjs.IntegrationDurableName(name, events.ChannelEvents)
			fstest.Eventually(t, 10*time.Second, func() bool {
				_, err := js.Consumer(ctx, "FS_ORG_north", durable)
				return err == nil
			}, "durable %s created", durable)
			b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e4", map[string]any{"id": "e4"}))
		}
		if err := <-done; err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("start %s: got %v (%v), want %s", c.name, got, err, c.want)
		}
	}
}

// TestSubscription_Run_KindsChange: other kinds pass unhandled; run again
// with another kind, the durable goes on from where it stopped (it neither
// rereads nor skips); bad options are refused before anything is read.
func TestSubscription_Run_KindsChange(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := b.ConnectIntegration(t, "report", "north")
	for i, k := range []string{"event", "finding", "event", "finding", "event"} {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, k, fmt.Sprintf("%c%d", k[0], i/2+1), map[string]any{"k": k}))
	}
	runKind := func(kind string, n int) []string {
		var got []string
		run, stop := context.WithTimeout(ctx, 15*time.Second) // a change may wait one ack wait (5 s) after a restart
		defer stop()
		sub := feed.New(c, feed.Options{Integration: "report", Units: []string{"north"}, Channels: []events.Channel{events.ChannelEvents},
			Kinds: []string{kind}, Log: quiet()}, func(_ context.Context, ch feed.Change) error {
			got = append(got, ch.Envelope.RecordID)
			if len(got) == n {
				stop()
			}
			return nil
		})
		if err := sub.Run(run); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		return got
	}
	// Stopping at e3 (the last change), the first run has passed f2.
	if got := runKind("event", 3); fmt.Sprint(got) != "[e1 e2 e3]" {
		t.Fatalf("first run %v, want the three events", got)
	}
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "finding", "late", map[string]any{"k": "late"}))
	if got := runKind("finding", 1); fmt.Sprint(got) != "[late]" {
		t.Fatalf("second run with kind finding %v, want [late]: f1 and f2 passed (acknowledged unhandled) in the first run", got)
	}
	for _, o := range []feed.Options{{Integration: "", Units: []string{"north"}}, {Integration: "report"}} {
		if err := feed.New(c, o, nil).Run(ctx); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}
