package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// StatusNotifier is a [Backend] that says when its status may have
// changed (*agent.Agent is one): the status stream then reads the status
// only after a change, instead of polling it.
type StatusNotifier interface {
	// StatusChanged returns a channel closed at the next change.
	StatusChanged() <-chan struct{}
}

const (
	// streamGap is the least time between two status reads of one stream:
	// changes within it are coalesced into one event.
	streamGap = 250 * time.Millisecond
	// streamRefresh is how often a stream sends a keep-alive comment and
	// reads the status even without a change (the age band of waiting
	// updates changes with time alone).
	streamRefresh = 15 * time.Second
)

// stream sends the status as server-sent events ("event: status") each
// time it changes, "event: error" with an [ErrorBody] when the status
// cannot be read, and a comment every 15 s to keep the connection open. A
// backend that is a [StatusNotifier] is read when it reports a change (at
// most every 250 ms) and at each keep-alive; any other is polled every
// 250 ms.
func (h *handler) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	notifier, _ := h.b.(StatusNotifier)
	keep := time.NewTicker(streamRefresh)
	defer keep.Stop()
	var last []byte
	for {
		var changed <-chan struct{}
		var poll <-chan time.Time
		if notifier != nil {
			changed = notifier.StatusChanged() // before the read: a change during it is not missed
		} else {
			poll = time.After(streamGap)
		}
		read := time.Now()
		if ev, b := h.statusEvent(ctx); b != nil && !bytes.Equal(b, last) {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev, b)
			fl.Flush()
			last = b
		}
		select {
		case <-ctx.Done():
			return
		case <-stoppingOf(ctx):
			return
		case <-keep.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
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
// with the status, "error" with an [ErrorBody], or nil data when the
// request ended meanwhile.
func (h *handler) statusEvent(ctx context.Context) (string, []byte) {
	st, err := h.b.Status(ctx)
	if err == nil {
		b, _ := json.Marshal(st)
		return "status", b
	}
	if ctx.Err() != nil {
		return "", nil
	}
	var eb ErrorBody
	eb.Error.Code, eb.Error.Message = "internal", err.Error()
	return "error", mustJSON(eb)
}

// pause waits d (nothing if d <= 0) and reports whether the stream should
// go on: false once the request ended or the API is stopping.
func pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-stoppingOf(ctx):
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
