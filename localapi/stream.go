package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/fieldsync/fieldsync/agent"
)

// StatusNotifier is a [Backend] that says when its status may have
// changed (*agent.Agent is one): the status streams then read the status
// only after a change, instead of polling it.
type StatusNotifier interface {
	// StatusChanged returns a channel closed at the next change.
	StatusChanged() <-chan struct{}
}

// OutcomeFeed is a [Backend] that announces its write outcomes
// (*agent.Agent is one): each status stream then also sends an event per
// outcome, as it is announced (see [agent.Agent.Outcomes]).
type OutcomeFeed interface {
	Outcomes(after uint64) (outs []agent.WriteOutcome, last uint64, missed bool)
	OutcomesChanged() <-chan struct{}
}

const (
	// streamGap is the least time between two status reads: changes within
	// it are coalesced into one event.
	streamGap = 250 * time.Millisecond
	// streamRefresh is how often the status is read even without a change
	// (the age band of waiting updates changes with time alone) and each
	// stream sends a keep-alive comment.
	streamRefresh = 15 * time.Second
)

// stream sends the status as server-sent events ("event: status") each
// time it changes, "event: error" with an [ErrorBody] when the status
// cannot be read, and a comment every 15 s to keep the connection open.
// Every open stream shares one reader of the status (see [statusFeed]).
// With an [OutcomeFeed] backend it also sends "event: write" with an
// [agent.WriteOutcome] for each write decided after the stream opened, at
// once, and "event: writes-missed" when this stream fell so far behind
// that outcomes were dropped (re-read GET /v1/conflicts and the records).
func (h *handler) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	ctx := r.Context()
	ev, next, leave := h.feed.join()
	defer leave()
	outs := newOutcomeCursor(h.b)
	keep := time.NewTicker(streamRefresh)
	defer keep.Stop()
	var sent []byte
	for {
		if ev.data != nil && !bytes.Equal(ev.data, sent) {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, ev.data)
			sent = ev.data
		}
		outs.send(w)
		fl.Flush()
		select {
		case <-ctx.Done():
			return
		case <-stoppingOf(ctx):
			return
		case <-keep.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		case <-next:
			ev, next = h.feed.latest()
		case <-outs.changed:
		}
	}
}

// outcomeCursor is one stream's position in its backend's write outcomes.
type outcomeCursor struct {
	feed    OutcomeFeed // nil: the backend announces none
	after   uint64
	changed <-chan struct{} // closed at the next outcome (nil: never)
}

func newOutcomeCursor(b Backend) *outcomeCursor {
	c := &outcomeCursor{}
	if f, ok := b.(OutcomeFeed); ok {
		c.feed, c.changed = f, f.OutcomesChanged()
		_, c.after, _ = f.Outcomes(^uint64(0)) // from now on
	}
	return c
}

// send writes the outcomes announced since the last send.
func (c *outcomeCursor) send(w io.Writer) {
	if c.feed == nil {
		return
	}
	c.changed = c.feed.OutcomesChanged() // before the read: nothing in between is missed
	outs, last, missed := c.feed.Outcomes(c.after)
	if missed {
		fmt.Fprintf(w, "event: writes-missed\ndata: {\"after\":%d}\n\n", c.after)
	}
	for i := range outs {
		fmt.Fprintf(w, "event: write\ndata: %s\n\n", mustJSON(&outs[i]))
	}
	c.after = last
}

// event is one server-sent event: its name and data.
type event struct {
	name string
	data []byte
}

// statusFeed reads the status for every open stream of a handler: once
// per change of a [StatusNotifier] backend (changes within streamGap
// coalesced), every streamGap for any other, and every streamRefresh in
// any case, however many streams are open, and not at all while none is.
// Its reader goroutine runs from the first stream joining to the last one
// leaving.
type statusFeed struct {
	b      Backend
	mu     sync.Mutex
	cur    event
	next   chan struct{} // closed when cur changes
	open   int
	gen    int                // the current reader's generation
	cancel context.CancelFunc // ends the current reader
}

func newStatusFeed(b Backend) *statusFeed { return &statusFeed{b: b, next: make(chan struct{})} }

// join registers a stream: it returns the latest event (nil data before
// the first read), a channel closed when a newer one is out, and leave,
// to call when the stream ends.
func (f *statusFeed) join() (event, <-chan struct{}, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open++; f.open == 1 {
		var ctx context.Context
		ctx, f.cancel = context.WithCancel(context.Background())
		f.gen++
		go f.read(ctx, f.gen)
	}
	var once sync.Once
	return f.cur, f.next, func() { once.Do(f.leave) }
}

func (f *statusFeed) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open--; f.open == 0 {
		f.cancel()
		f.cur = event{} // the next reader starts afresh
	}
}

// latest returns the latest event and a channel closed when a newer one
// is out.
func (f *statusFeed) latest() (event, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur, f.next
}

// publish makes ev the latest event if it differs, unless the reader of
// generation gen that read it has been stopped.
func (f *statusFeed) publish(gen int, ev event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gen != gen || f.open == 0 || (ev.name == f.cur.name && bytes.Equal(ev.data, f.cur.data)) {
		return
	}
	f.cur = ev
	close(f.next)
	f.next = make(chan struct{})
}

// read is the feed's reader of generation gen, until ctx ends.
func (f *statusFeed) read(ctx context.Context, gen int) {
	notifier, _ := f.b.(StatusNotifier)
	refresh := time.NewTicker(streamRefresh)
	defer refresh.Stop()
	for {
		var changed <-chan struct{}
		var poll <-chan time.Time
		if notifier != nil {
			changed = notifier.StatusChanged() // before the read: a change during it is not missed
		} else {
			poll = time.After(streamGap)
		}
		read := time.Now()
		if ev := statusEvent(ctx, f.b); ev.data != nil {
			f.publish(gen, ev)
		}
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
			continue
		case <-poll:
			continue
		case <-changed:
		}
		if !pause(ctx, streamGap-time.Since(read)) {
			return
		}
	}
}

// statusEvent reads the status and returns the event to send: "status"
// with the status, "error" with an [ErrorBody], or nil data when ctx ended
// meanwhile.
func statusEvent(ctx context.Context, b Backend) event {
	st, err := b.Status(ctx)
	if err == nil {
		data, _ := json.Marshal(st)
		return event{"status", data}
	}
	if ctx.Err() != nil {
		return event{}
	}
	var eb ErrorBody
	eb.Error.Code, eb.Error.Message = "internal", err.Error()
	return event{"error", mustJSON(eb)}
}

// pause waits d (nothing if d <= 0) and reports whether to go on: false
// once ctx ended.
func pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// stoppingKey holds, in a request's context, a channel [Serve] closes when
// the API stops.
type stoppingKey struct{}

// stoppingOf returns the channel closed when the API stops, or nil (never
// ready) for a handler served some other way.
func stoppingOf(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(stoppingKey{}).(<-chan struct{})
	return ch
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
