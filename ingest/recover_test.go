package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/internal/retry"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
)

// healthLog records what an ingester reports to Options.OnHealth.
type healthLog struct {
	mu      sync.Mutex
	reports []error // nil: reading
}

func (l *healthLog) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports = append(l.reports, err)
}

// snapshot returns the reports so far.
func (l *healthLog) snapshot() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.reports...)
}

// downThenUp reports whether, from report from on, ingest said it was down
// with an error matching target and then that it was reading again.
func (l *healthLog) downThenUp(from int, target error) bool {
	down := false
	for _, err := range l.snapshot()[from:] {
		switch {
		case err != nil && errors.Is(err, target):
			down = true
		case err == nil && down:
			return true
		}
	}
	return false
}

// startOn runs an ingester on client until the test ends; set, if not
// nil, adjusts it before it runs.
func startOn(t *testing.T, client *natsjs.Client, o Options, set func(*Ingester)) *runner {
	t.Helper()
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	in := New(client, o)
	if set != nil {
		set(in)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- in.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("ingester: %v", err)
		}
	})
	return r
}

// TestIngester_Run_ResumesAfterDurableDeleted: an operator deletes ingest's
// durable; ingest says it is down, creates the durable again and applies
// what is uploaded afterwards.
func TestIngester_Run_ResumesAfterDurableDeleted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	var health healthLog
	r := startOn(t, h.b.Client, Options{OnHealth: health.record, Retry: retry.Policy{Initial: 50 * time.Millisecond}}, nil)

	h.upload(mutation(t, "tab1", "m1", "north", "r1", 0, "", map[string]any{"n": 1}))
	fstest.Eventually(t, waitFor, func() bool { return h.remembered("tab1", "m1") != nil }, "m1 decided")
	from := len(health.snapshot())

	if err := h.js.DeleteConsumer(testCtx(t), events.UploadStream, natsjs.IngestDurable); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	fstest.Eventually(t, 5*time.Second, func() bool { return health.downThenUp(from, jetstream.ErrConsumerDeleted) },
		"ingest reports the deleted durable and reads again; reports %v", health.snapshot())
	t.Logf("ingest back %v after its durable was deleted", time.Since(deleted).Round(time.Millisecond))
	r.assertRunning(t)

	h.upload(mutation(t, "tab1", "m2", "north", "r2", 0, "", map[string]any{"n": 2}))
	fstest.Eventually(t, 5*time.Second, func() bool {
		res := h.remembered("tab1", "m2")
		return res != nil && res.Status == events.Accepted
	}, "m2, uploaded after the durable was re-created, accepted")
	if _, err := h.js.Consumer(testCtx(t), events.UploadStream, natsjs.IngestDurable); err != nil {
		t.Fatalf("durable not re-created: %v", err)
	}
	if n := len(ofRecord(h.orgChanges("north"), "r1")); n != 1 {
		t.Fatalf("r1 has %d changes after the re-created durable read m1 again, want 1", n)
	}
}

// TestIngester_Run_ResumesAfterBrokerRestart: the nats-server ingest talks
// to over TCP restarts on the same port and store; ingest goes on.
func TestIngester_Run_ResumesAfterBrokerRestart(t *testing.T) {
	t.Parallel()
	b := fstest.MustStartBroker(t, "north")
	client := b.ConnectComponent(t, natsauth.RoleIngest, natsjs.ConnectOptions{Name: "ingest"})
	dev := b.ConnectDevice(t, "tab1", "north")
	var health healthLog
	startOn(t, client, Options{OnHealth: health.record, Retry: retry.Policy{Initial: 50 * time.Millisecond}}, nil)
	results := func(mut string) *events.Result {
		l, err := client.MutationLog(testCtx(t))
		if err != nil {
			return nil
		}
		r, _ := l.Get(testCtx(t), "tab1", mut)
		return r
	}
	if _, err := dev.PublishUpload(testCtx(t), mutation(t, "tab1", "m1", "north", "r1", 0, "", map[string]any{"n": 1})); err != nil {
		t.Fatal(err)
	}
	fstest.Eventually(t, waitFor, func() bool { return results("m1") != nil }, "m1 decided")

	b.Restart(t)
	restarted := time.Now()
	fstest.Eventually(t, 10*time.Second, client.Connected, "ingest's connection back")

	// Uploads keep being tried until the broker has its streams back.
	fstest.Eventually(t, 10*time.Second, func() bool {
		_, err := dev.PublishUpload(testCtx(t), mutation(t, "tab1", "m2", "north", "r2", 0, "", map[string]any{"n": 2}))
		return err == nil
	}, "upload after the restart stored")
	fstest.Eventually(t, 10*time.Second, func() bool {
		r := results("m2")
		return r != nil && r.Status == events.Accepted
	}, "m2, uploaded after the restart, accepted; health reports %v", health.snapshot())
	t.Logf("upload after restart applied %v after the server was back", time.Since(restarted).Round(time.Millisecond))
}

// retryLog records the redeliveries an ingester asks for.
type retryLog struct {
	mu    sync.Mutex
	asked map[uint64][]asked // upload sequence → in delivery order
}

type asked struct {
	delivered uint64
	delay     time.Duration
	at        time.Time
}

func (l *retryLog) record(u *natsjs.Upload, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked[u.StreamSeq] = append(l.asked[u.StreamSeq], asked{u.Delivered, d, time.Now()})
}

func (l *retryLog) of(seq uint64) []asked {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]asked(nil), l.asked[seq]...)
}

// TestIngester_Run_RetriesBackOff: uploads that cannot be decided (the
// results stream is gone) are redelivered after jittered waits that grow
// with their delivery count up to the maximum; two uploads do not share a
// schedule; once the stream is back they are decided.
func TestIngester_Run_RetriesBackOff(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	pol := retry.Policy{Initial: 20 * time.Millisecond, Max: 300 * time.Millisecond}
	log := &retryLog{asked: map[uint64][]asked{}}
	startOn(t, h.b.Client, Options{Retry: pol}, func(in *Ingester) { in.onRetry = log.record })
	// The ingester opens its mutation log before it reads: wait for that.
	h.upload(mutation(t, "tab1", "m0", "north", "r0", 0, "", map[string]any{"n": 0}))
	fstest.Eventually(t, waitFor, func() bool { return h.remembered("tab1", "m0") != nil }, "m0 decided")
	if err := h.js.DeleteStream(testCtx(t), events.ResultStream); err != nil {
		t.Fatal(err)
	}

	const deliveries = 7
	seqs := []uint64{
		h.upload(mutation(t, "tab1", "m1", "north", "r1", 0, "", map[string]any{"n": 1})),
		h.upload(mutation(t, "tab1", "m2", "north", "r2", 0, "", map[string]any{"n": 2})),
	}
	for _, s := range seqs {
		fstest.Eventually(t, waitFor, func() bool { return len(log.of(s)) >= deliveries }, "upload %d retried %d times", s, deliveries)
	}
	capped := time.Duration(float64(pol.Max) / (1 + retry.Jitter))
	var schedules [2]string
	for i, s := range seqs {
		got := log.of(s)[:deliveries]
		for j, a := range got {
			iv := min(pol.Initial<<j, capped)
			lo, hi := time.Duration(float64(iv)*(1-retry.Jitter)), time.Duration(float64(iv)*(1+retry.Jitter))
			if a.delivered != uint64(j+1) || a.delay < lo || a.delay > hi || a.delay > pol.Max {
				t.Fatalf("upload %d, delivery %d: waited %v, want within [%v, %v] and at most %v (all: %+v)", s, a.delivered, a.delay, lo, hi, pol.Max, got)
			}
			if j > 0 {
				// The broker honours the wait asked for (minus timer slack).
				if gap := a.at.Sub(got[j-1].at); gap < got[j-1].delay*9/10 {
					t.Fatalf("upload %d redelivered %v after asking for %v", s, gap, got[j-1].delay)
				}
			}
			schedules[i] += fmt.Sprint(a.delay, " ")
		}
	}
	if schedules[0] == schedules[1] {
		t.Fatalf("two uploads retried on the same schedule: %s", schedules[0])
	}

	if err := h.b.Client.ProvisionIngest(testCtx(t), natsjs.IngestPolicy{}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"m1", "m2"} {
		fstest.Eventually(t, waitFor, func() bool {
			r := h.remembered("tab1", m)
			return r != nil && r.Status == events.Accepted
		}, "%s accepted once the results stream is back", m)
	}
}
