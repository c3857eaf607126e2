package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

func (h *handler) activity(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit: want 1..1000")
			return
		}
		limit = n
	}
	acts, err := h.b.Activity(r.Context(), limit)
	if err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"activity": acts})
}

// Settings is the body of POST /v1/settings.
type Settings struct {
	// RefreshMode switches non-blocking sync on or off (next sync).
	RefreshMode *bool `json:"refresh_mode"`
}

func (h *handler) settings(w http.ResponseWriter, r *http.Request) {
	var s Settings
	if err := decodeJSON(w, r, 4096, &s); err != nil || s.RefreshMode == nil {
		bodyError(w, err, `body: want {"refresh_mode": true|false}`)
		return
	}
	if err := h.b.SetRefreshMode(r.Context(), *s.RefreshMode); err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"refresh_mode": *s.RefreshMode, "effective": "next sync"})
}

// streamPoll is how often the status stream looks for a change.
const streamPoll = 250 * time.Millisecond

// stream sends the status as server-sent events ("event: status") each
// time it changes, "event: error" with an [ErrorBody] when the status
// cannot be read, and a comment every 15 s to keep the connection open.
func (h *handler) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	var last []byte
	tick, keep := time.NewTicker(streamPoll), time.NewTicker(15*time.Second)
	defer tick.Stop()
	defer keep.Stop()
	for {
		ev, b := "status", []byte(nil)
		st, err := h.b.Status(r.Context())
		if err == nil {
			b, _ = json.Marshal(st)
		} else if r.Context().Err() == nil {
			var eb ErrorBody
			eb.Error.Code, eb.Error.Message = "internal", err.Error()
			ev, b = "error", mustJSON(eb)
		}
		if b != nil && !bytes.Equal(b, last) {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev, b)
			fl.Flush()
			last = b
		}
		select {
		case <-r.Context().Done():
			return
		case <-stoppingOf(r.Context()):
			return
		case <-keep.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case <-tick.C:
		}
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
