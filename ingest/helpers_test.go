package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

// waitFor bounds every poll of these tests.
const waitFor = 20 * time.Second

// testCtx returns a context that ends with the test or after 30 s.
func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or waitFor passes.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	fstest.Eventually(tb, waitFor, cond, "waiting for %s", what)
}

// harness is one embedded broker with the ingest streams, plus what the
// tests need to drive and observe ingesters on it.
type harness struct {
	t  *testing.T
	b  *fstest.Broker
	js jetstream.JetStream

	mu      sync.Mutex
	handled map[uint64]int // upload stream sequence → times handled
}

func newHarness(t *testing.T, units ...string) *harness {
	t.Helper()
	b := fstest.MustStartBroker(t, units...)
	js, err := jetstream.New(b.Client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, b: b, js: js, handled: map[uint64]int{}}
}

// runner is one Ingester.Run in a goroutine.
type runner struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs an ingester until the test ends.
func (h *harness) start(o Options) *runner { return h.run(context.Background(), o, nil) }

// run runs an ingester until ctx ends or stop is called; hook, if set, runs
// after each handled upload.
func (h *harness) run(ctx context.Context, o Options, hook func(*natsjs.Upload)) *runner {
	h.t.Helper()
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithCancel(ctx)
	in := New(h.b.Client, o)
	in.onHandled = func(u *natsjs.Upload) {
		h.mu.Lock()
		h.handled[u.StreamSeq]++
		h.mu.Unlock()
		if hook != nil {
			hook(u)
		}
	}
	r := &runner{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- in.Run(ctx) }()
	h.t.Cleanup(func() {
		if err := r.stop(h.t); err != nil {
			h.t.Errorf("ingester: %v", err)
		}
	})
	return r
}

// stop cancels the ingester and returns what Run returned.
func (r *runner) stop(tb testing.TB) error {
	tb.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(15 * time.Second):
			r.err = fmt.Errorf("Run did not return within 15 s of cancel")
		}
	})
	return r.err
}

// wait waits for Run to return on its own (its context ended).
func (r *runner) wait(tb testing.TB) error {
	tb.Helper()
	select {
	case err := <-r.done:
		r.once.Do(func() { r.err = err })
		return err
	case <-time.After(15 * time.Second):
		tb.Fatal("Run did not return within 15 s of its context ending")
		return nil
	}
}

// assertRunning fails the test if Run has returned.
func (r *runner) assertRunning(tb testing.TB) {
	tb.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		tb.Fatalf("ingester stopped: %v", err)
	default:
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// handledTimes returns how often the upload at stream sequence seq was handled.
func (h *harness) handledTimes(seq uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handled[seq]
}

// waitHandled waits until every upload at seqs was handled at least once.
func (h *harness) waitHandled(seqs ...uint64) {
	h.t.Helper()
	eventually(h.t, fmt.Sprintf("uploads %v to be handled", seqs), func() bool {
		for _, s := range seqs {
			if h.handledTimes(s) == 0 {
				return false
			}
		}
		return true
	})
}

var serverSeq atomic.Int64

// serverChange is a server-side change (nil body: a delete). Unlike
// fstest.Change it is safe in parallel tests.
func serverChange(tb testing.TB, unit, id string, body map[string]any) *events.Envelope {
	tb.Helper()
	e := &events.Envelope{EventID: fmt.Sprintf("srv-%d-%d", time.Now().UnixNano(), serverSeq.Add(1)), OrgUnit: unit,
		Channel: events.ChannelEvents, Kind: "event", RecordID: id, Op: events.OpDelete,
		SchemaVersion: events.SchemaVersion, Timestamp: time.Now().UTC()}
	if body != nil {
		e.Op, e.Body = events.OpUpsert, fstest.Body(tb, body)
	}
	return e
}

// mutation is a device's change to events record id of unit (nil body: a
// delete).
func mutation(tb testing.TB, dev, mut, unit, id string, base uint64, after string, body map[string]any) *events.Envelope {
	tb.Helper()
	e := serverChange(tb, unit, id, body)
	e.EventID = "ev-" + dev + "-" + mut
	e.Origin = events.Origin{DeviceID: dev, MutationID: mut, BaseVersion: base, After: after}
	return e
}

// upload publishes e as its device would and returns its upload sequence.
func (h *harness) upload(e *events.Envelope) uint64 {
	h.t.Helper()
	seq, err := h.b.Client.PublishUpload(testCtx(h.t), e)
	if err != nil {
		h.t.Fatalf("upload %s/%s: %v", e.Origin.DeviceID, e.Origin.MutationID, err)
	}
	return seq
}

// rawUpload publishes data on subject as is; msgID, if set, is the
// Nats-Msg-Id header. It returns the upload sequence.
func (h *harness) rawUpload(subject string, data []byte, msgID string) uint64 {
	h.t.Helper()
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if _, a, err := events.ParseUploadSubject(subject); err == nil && a != (events.Address{}) {
		msg.Header.Set(events.AddressHeader, a.Key()) // as the agent's client does
	}
	pa, err := h.js.PublishMsg(testCtx(h.t), msg)
	if err != nil {
		h.t.Fatalf("raw upload on %s: %v", subject, err)
	}
	if pa.Duplicate {
		h.t.Fatalf("raw upload on %s was deduplicated by the uploads stream", subject)
	}
	return pa.Sequence
}

func uploadSubject(tb testing.TB, dev string, a events.Address) string {
	tb.Helper()
	s, err := events.UploadSubject(dev, a)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustEncode(tb testing.TB, e *events.Envelope) []byte {
	tb.Helper()
	b, err := events.Encode(e)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// reencode returns e's wire bytes with some wire keys replaced: a way to
// produce envelopes events.Encode refuses to write.
func reencode(tb testing.TB, e *events.Envelope, set map[string]any) []byte {
	tb.Helper()
	var m map[string]any
	if err := msgpack.Unmarshal(mustEncode(tb, e), &m); err != nil {
		tb.Fatal(err)
	}
	for k, v := range set {
		m[k] = v
	}
	b, err := msgpack.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// resultWatcher collects a device's results from the results stream.
type resultWatcher struct {
	mu    sync.Mutex
	byMut map[string]*events.Result
	bad   []error
}

func (h *harness) watchResults(dev string) *resultWatcher {
	h.t.Helper()
	filter, err := events.DeviceResultSubjects(dev)
	if err != nil {
		h.t.Fatal(err)
	}
	cons, err := h.js.OrderedConsumer(testCtx(h.t), events.ResultStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		h.t.Fatal(err)
	}
	w := &resultWatcher{byMut: map[string]*events.Result{}}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		r, err := events.DecodeResult(m.Data())
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			w.bad = append(w.bad, fmt.Errorf("%s: %w", m.Subject(), err))
			return
		}
		w.byMut[r.MutationID] = r
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(cc.Stop)
	return w
}

func (w *resultWatcher) get(mut string) *events.Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byMut[mut]
}

// wait waits for a result of every mutation in muts.
func (w *resultWatcher) wait(tb testing.TB, muts ...string) map[string]*events.Result {
	tb.Helper()
	eventually(tb, fmt.Sprintf("results of %d mutations", len(muts)), func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, m := range muts {
			if w.byMut[m] == nil {
				return false
			}
		}
		return true
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bad) > 0 {
		tb.Fatalf("undecodable results: %v", w.bad)
	}
	out := make(map[string]*events.Result, len(muts))
	for _, m := range muts {
		out[m] = w.byMut[m]
	}
	return out
}

// answerLog records every result published to a device, including those
// the results stream deduplicates (a core subscription sees them all).
type answerLog struct {
	mu    sync.Mutex
	byMut map[string][]*events.Result
}

func (h *harness) subscribeAnswers(dev string) *answerLog {
	h.t.Helper()
	filter, err := events.DeviceResultSubjects(dev)
	if err != nil {
		h.t.Fatal(err)
	}
	a := &answerLog{byMut: map[string][]*events.Result{}}
	nc := h.b.Client.Conn()
	sub, err := nc.Subscribe(filter, func(m *nats.Msg) {
		r, err := events.DecodeResult(m.Data)
		if err != nil {
			return
		}
		a.mu.Lock()
		a.byMut[r.MutationID] = append(a.byMut[r.MutationID], r)
		a.mu.Unlock()
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return a
}

// waitN waits until mut was answered n times and returns the answers.
func (a *answerLog) waitN(tb testing.TB, mut string, n int) []*events.Result {
	tb.Helper()
	eventually(tb, fmt.Sprintf("%d answers to %s", n, mut), func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.byMut[mut]) >= n
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*events.Result(nil), a.byMut[mut]...)
}

func wantResult(tb testing.TB, r *events.Result, dev, mut string, st events.ResultStatus, reason string) {
	tb.Helper()
	if r == nil {
		tb.Fatalf("no result for %s/%s", dev, mut)
	}
	if r.DeviceID != dev || r.MutationID != mut || r.Status != st || r.Reason != reason {
		tb.Fatalf("result = %s/%s %s reason %q (%s), want %s/%s %s reason %q", r.DeviceID, r.MutationID, r.Status, r.Reason,
			r.Message, dev, mut, st, reason)
	}
	if st == events.Accepted && r.Version == 0 {
		tb.Fatalf("accepted %s/%s without a version", dev, mut)
	}
}

// change is one message of an org unit stream.
type change struct {
	Seq uint64
	Env *events.Envelope
}

// orgChanges reads the whole stream of unit.
func (h *harness) orgChanges(unit string) []change {
	h.t.Helper()
	ctx := testCtx(h.t)
	name, err := events.OrgStream(unit)
	if err != nil {
		h.t.Fatal(err)
	}
	cons, err := h.js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	want := int(info.NumPending)
	var out []change
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				h.t.Fatal(err)
			}
			e, err := events.Decode(m.Data())
			if err != nil {
				h.t.Fatalf("%s seq %d: %v", name, md.Sequence.Stream, err)
			}
			out = append(out, change{Seq: md.Sequence.Stream, Env: e})
		}
		if err := batch.Error(); err != nil {
			h.t.Fatal(err)
		}
		if n == 0 {
			h.t.Fatalf("%s: read %d of %d changes, then nothing", name, len(out), want)
		}
	}
	return out
}

// ofRecord keeps the changes of record id.
func ofRecord(chs []change, id string) []change {
	var out []change
	for _, c := range chs {
		if c.Env.RecordID == id {
			out = append(out, c)
		}
	}
	return out
}

// ofMutation keeps the changes made by (dev, mut).
func ofMutation(chs []change, dev, mut string) []change {
	var out []change
	for _, c := range chs {
		if c.Env.Origin.DeviceID == dev && c.Env.Origin.MutationID == mut {
			out = append(out, c)
		}
	}
	return out
}

// fromDevices keeps device-made changes.
func fromDevices(chs []change) []change {
	var out []change
	for _, c := range chs {
		if !c.Env.Origin.IsServer() {
			out = append(out, c)
		}
	}
	return out
}

// deadLetters returns the number of dead letters per subject.
func (h *harness) deadLetters() map[string]uint64 {
	h.t.Helper()
	ctx := testCtx(h.t)
	s, err := h.js.Stream(ctx, natsjs.DeadLetterStream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("fs.dlq.>"))
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]uint64{}
	for k, v := range info.State.Subjects {
		out[k] = v
	}
	return out
}

// remembered returns what the mutation bucket holds for (dev, mut).
func (h *harness) remembered(dev, mut string) *events.Result {
	h.t.Helper()
	ctx := testCtx(h.t)
	l, err := h.b.Client.MutationLog(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	r, err := l.Get(ctx, dev, mut)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// setOrgDuplicates re-provisions units with a dedupe window of d.
func (h *harness) setOrgDuplicates(d time.Duration, units ...string) {
	h.t.Helper()
	ctx := testCtx(h.t)
	if err := h.b.Client.Provision(ctx, units, natsjs.StreamPolicy{Duplicates: d}); err != nil {
		h.t.Fatal(err)
	}
	for _, u := range units {
		name, _ := events.OrgStream(u)
		s, err := h.js.Stream(ctx, name)
		if err != nil {
			h.t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Duplicates; got != d {
			h.t.Fatalf("%s: duplicate window %v after provisioning %v", name, got, d)
		}
	}
}

// waitOrgDedupeExpired waits until an event id published to unit's stream
// now is no longer deduplicated — so neither is any published before.
func (h *harness) waitOrgDedupeExpired(unit string) {
	h.t.Helper()
	ctx := testCtx(h.t)
	pub := h.b.Client.Publisher()
	probe := serverChange(h.t, unit, "dedupe-probe", map[string]any{"probe": true})
	if _, err := pub.Publish(ctx, probe, natsjs.PublishOptions{}); err != nil {
		h.t.Fatal(err)
	}
	start := time.Now()
	eventually(h.t, "the org stream's duplicate window to pass", func() bool {
		time.Sleep(100 * time.Millisecond) // paces the probes, each a publish: not synchronisation
		ack, err := pub.Publish(ctx, probe, natsjs.PublishOptions{})
		if err != nil {
			h.t.Fatal(err)
		}
		return !ack.Duplicate
	})
	h.t.Logf("duplicate window passed after %v", time.Since(start).Round(time.Millisecond))
}

func sameBody(a, b []byte) bool { return bytes.Equal(a, b) }
