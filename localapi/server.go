package localapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// Backend is what the API serves; *agent.Agent implements it.
type Backend interface {
	Status(ctx context.Context) (agent.Status, error)
	Records(ctx context.Context, q store.Query) ([]store.Record, error)
	RequestSync(scope agent.Scope) error
	Write(ctx context.Context, r agent.WriteRequest) (store.Mutation, error)
	Conflicts(ctx context.Context) ([]store.Conflict, error)
	Resolve(ctx context.Context, mutationID, action string) (*store.Mutation, error)
	SignIn(ctx context.Context, user string) error
	Apply(ctx context.Context) (agent.ApplyReport, error)
	SyncNow(ctx context.Context) (agent.Report, error)
	Activity(ctx context.Context, limit int) ([]store.Activity, error)
	SetRefreshMode(ctx context.Context, on bool) error
	Touch(ctx context.Context) error
}

// ErrBadCursor: an after= value that is not a record key ([Cursor]).
var ErrBadCursor = errors.New("localapi: bad cursor")

// ErrNotLoopback: the API refuses to listen on a non-loopback address.
var ErrNotLoopback = errors.New("localapi: address is not loopback")

//go:embed page.html
var page []byte

//go:embed openapi.json
var openapi []byte

// Route is one operation of the API.
type Route struct {
	Method, Path string
	handle       http.HandlerFunc
}

// Routes lists the API's operations (what openapi.json describes).
func Routes() []Route { return (&handler{}).routes() }

func (h *handler) routes() []Route {
	return []Route{
		{"GET", "/v1/status", h.status},
		{"GET", "/v1/records", h.records},
		{"POST", "/v1/records", h.write},
		{"POST", "/v1/sync", h.sync},
		{"POST", "/v1/apply", h.apply},
		{"GET", "/v1/conflicts", h.conflicts},
		{"POST", "/v1/conflicts/{id}/{action}", h.resolve},
		{"POST", "/v1/signin", h.signin},
		{"GET", "/v1/activity", h.activity},
		{"GET", "/v1/stream", h.stream},
		{"POST", "/v1/settings", h.settings},
		{"GET", "/v1/documents", h.documents},
		{"POST", "/v1/documents/download-all", h.downloadAll},
		{"POST", "/v1/documents/{id}/download", h.download},
		{"GET", "/v1/documents/{id}/content", h.content},
		{"GET", "/", h.page},
		{"GET", "/v1/openapi.json", h.openapi},
		{"GET", "/metrics", h.metrics},
	}
}

// pageCSP lets the page run its own inline script (by hash) and talk to
// this origin only; it cannot be framed.
var pageCSP = "default-src 'none'; connect-src 'self'; img-src data:; style-src 'unsafe-inline'; script-src '" + scriptHash(page) +
	"'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// scriptHash is the CSP source of the one inline <script> of html.
func scriptHash(html []byte) string {
	_, rest, _ := bytes.Cut(html, []byte("<script>"))
	body, _, ok := bytes.Cut(rest, []byte("</script>"))
	if !ok {
		panic("localapi: page.html has no <script>")
	}
	// Browsers hash the script with CRLF turned into LF: so must we, in case
	// page.html was checked out with Windows line ends.
	sum := sha256.Sum256(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", pageCSP)
	w.Header().Set("Cache-Control", "no-store")
	w.Write(page)
}

func (h *handler) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openapi)
}

func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	if h.metricsH == nil {
		writeError(w, http.StatusNotFound, "not_found", "metrics are not enabled")
		return
	}
	h.metricsH.ServeHTTP(w, r)
}

// Options configure [Handler].
type Options struct {
	// Token is the local API token every request but the page and the API
	// description must carry (see [EnsureToken]); empty refuses them all.
	Token string
	Log   *slog.Logger
	// Metrics, if set, is served at /metrics (token required).
	Metrics http.Handler
}

// Handler returns the API's routes behind the token and loopback guard.
func Handler(b Backend, opt Options) http.Handler {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	h := &handler{b: b, log: opt.Log, metricsH: opt.Metrics, feed: newStatusFeed(b)}
	mux, probe := http.NewServeMux(), http.NewServeMux()
	allow := map[string][]string{} // path pattern -> its methods
	for _, rt := range h.routes() {
		path := rt.Path
		if path == "/" {
			path += "{$}"
		}
		mux.HandleFunc(rt.Method+" "+path, rt.handle)
		if allow[path] == nil {
			probe.HandleFunc(path, func(http.ResponseWriter, *http.Request) {})
		}
		allow[path] = append(allow[path], rt.Method)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, path := probe.Handler(r); allow[path] != nil {
			w.Header().Set("Allow", strings.Join(allow[path], ", "))
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" "+r.URL.Path+": allowed "+strings.Join(allow[path], ", "))
			return
		}
		writeError(w, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path)
	})
	return guard(opt.Token, h.touching(mux))
}

// touching records API use (the retention count restarts) before serving
// an authorised API request; the public paths do not count.
func (h *handler) touching(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && !public(r) {
			if err := h.b.Touch(r.Context()); err != nil {
				h.log.Warn("record API use", "err", err)
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (h *handler) apply(w http.ResponseWriter, r *http.Request) {
	rep, err := h.b.Apply(r.Context())
	if errors.Is(err, store.ErrNothingToApply) {
		writeError(w, http.StatusConflict, "nothing_to_apply", err.Error())
		return
	}
	if err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *handler) signin(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User string `json:"user"`
	}
	if err := decodeJSON(w, r, 4096, &req); err != nil || req.User == "" {
		bodyError(w, err, `body: want {"user": "..."}`)
		return
	}
	var refused *agent.SignInError
	if err := h.b.SignIn(r.Context(), req.User); errors.As(err, &refused) {
		writeError(w, http.StatusUnauthorized, refused.Kind, refused.Message)
		return
	} else if errors.Is(err, agent.ErrOffline) {
		writeError(w, http.StatusServiceUnavailable, "offline", err.Error())
		return
	} else if err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"signed_in": req.User})
}

type handler struct {
	b        Backend
	log      *slog.Logger
	metricsH http.Handler
	feed     *statusFeed // the status streams' shared reader
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	st, err := h.b.Status(r.Context())
	if err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) records(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	recs, err := h.b.Records(r.Context(), q)
	if errors.Is(err, store.ErrBadQuery) {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err != nil {
		h.internal(w, err)
		return
	}
	page := RecordsPage{Records: recs, Count: len(recs)}
	if n := len(recs); n > 0 && n == q.Limit {
		page.Next = Cursor(recs[n-1])
	}
	writeJSON(w, http.StatusOK, page)
}

// RecordsPage answers GET /v1/records.
type RecordsPage struct {
	Records []store.Record `json:"records"`
	Count   int            `json:"count"`
	// Next, set when the page is full, is the after= value of the next
	// page (see [Cursor]).
	Next string `json:"next,omitempty"`
}

// Cursor is the after= value that continues a listing after record r:
// its key, org_unit/kind/id (none of the three contains a slash).
func Cursor(r store.Record) string {
	return CursorOf(store.Key{OrgUnit: r.OrgUnit, Kind: r.Kind, RecordID: r.RecordID})
}

// CursorOf is [Cursor] for a record key.
func CursorOf(k store.Key) string { return k.OrgUnit + "/" + k.Kind + "/" + k.RecordID }

// ParseCursor returns the record key of an after= value ([Cursor]).
func ParseCursor(s string) (*store.Key, error) {
	p := strings.Split(s, "/")
	if len(p) != 3 || p[1] == "" || p[2] == "" {
		return nil, fmt.Errorf("%w: after: want org_unit/kind/id (the next of the previous page), got %q", ErrBadCursor, s)
	}
	return &store.Key{OrgUnit: p[0], Kind: p[1], RecordID: p[2]}, nil
}

// Page sizes of GET /v1/records: limit defaults to defaultLimit and is
// reduced to maxLimit.
const (
	defaultLimit = 100
	maxLimit     = 10000
)

func parseQuery(r *http.Request) (store.Query, error) {
	v := r.URL.Query()
	ch, err := events.ParseChannel(v.Get("channel"))
	if err != nil {
		return store.Query{}, err
	}
	q := store.Query{Channel: ch, Kind: v.Get("kind"), Unit: store.AnyUnit, RecordID: v.Get("id")}
	if v.Has("org_unit") {
		q.Unit = v.Get("org_unit")
	}
	if v.Has("after") {
		if q.After, err = ParseCursor(v.Get("after")); err != nil {
			return q, err
		}
	}
	for name, dst := range map[string]*int{"limit": &q.Limit, "offset": &q.Offset} {
		if s := v.Get(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return q, fmt.Errorf("%s: want a non-negative integer, got %q", name, s)
			}
			*dst = n
		}
	}
	if q.Limit == 0 {
		q.Limit = defaultLimit
	}
	q.Limit = min(q.Limit, maxLimit)
	return q, nil
}

// WriteResponse answers POST /v1/records.
type WriteResponse struct {
	MutationID  string `json:"mutation_id"`
	BaseVersion uint64 `json:"base_version"`
	State       string `json:"state"`
}

func (h *handler) write(w http.ResponseWriter, r *http.Request) {
	var req agent.WriteRequest
	if err := decodeJSON(w, r, events.MaxBodySize*4, &req); err != nil {
		bodyError(w, err, "body: "+err.Error())
		return
	}
	m, err := h.b.Write(r.Context(), req)
	if errors.Is(err, agent.ErrBadWrite) && errors.Is(err, events.ErrTooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
		return
	}
	if errors.Is(err, agent.ErrBadWrite) {
		writeError(w, http.StatusBadRequest, "bad_write", err.Error())
		return
	}
	if errors.Is(err, agent.ErrRevoked) {
		writeError(w, http.StatusForbidden, "revoked", err.Error())
		return
	}
	if err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, WriteResponse{MutationID: m.MutationID, BaseVersion: m.BaseVersion, State: m.State})
}

func (h *handler) conflicts(w http.ResponseWriter, r *http.Request) {
	cs, err := h.b.Conflicts(r.Context())
	if err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"conflicts": cs, "count": len(cs)})
}

func (h *handler) resolve(w http.ResponseWriter, r *http.Request) {
	m, err := h.b.Resolve(r.Context(), r.PathValue("id"), r.PathValue("action"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, store.ErrCannotResolve):
		writeError(w, http.StatusConflict, "cannot_resolve", err.Error())
	case err != nil:
		h.internal(w, err)
	default:
		resp := map[string]any{"resolved": r.PathValue("id"), "action": r.PathValue("action")}
		if m != nil {
			resp["mutation_id"] = m.MutationID
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// SyncRequest is the body of POST /v1/sync.
type SyncRequest struct {
	Scope string `json:"scope"`
	// Reset is "Sync Now": upload pending writes, clear local data and
	// reload it (scope full only). It runs before the response.
	Reset bool `json:"reset,omitempty"`
}

func (h *handler) sync(w http.ResponseWriter, r *http.Request) {
	var req SyncRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, 4096, &req); err != nil {
			bodyError(w, err, "body: "+err.Error())
			return
		}
	}
	scope, err := agent.ParseScope(req.Scope)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if req.Reset {
		h.reset(w, r, scope)
		return
	}
	if err := h.b.RequestSync(scope); err != nil {
		writeError(w, http.StatusConflict, "sync_pending", err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"queued": true, "scope": scope, "at": time.Now().UTC()})
}

func (h *handler) reset(w http.ResponseWriter, r *http.Request, scope agent.Scope) {
	if scope != agent.ScopeFull {
		writeError(w, http.StatusBadRequest, "bad_request", "reset needs scope full")
		return
	}
	rep, err := h.b.SyncNow(r.Context())
	if errors.Is(err, agent.ErrResetRefused) {
		writeError(w, http.StatusConflict, "reset_refused", err.Error())
		return
	}
	if err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (h *handler) internal(w http.ResponseWriter, err error) {
	h.log.Error("local api", "err", err)
	writeError(w, http.StatusInternalServerError, "internal", err.Error())
}

// ErrorBody is the shape of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

// bodyError answers a request body that did not decode: 413 when it was
// over the limit, else 400 with want.
func bodyError(w http.ResponseWriter, err error, want string) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", tooBig.Limit))
		return
	}
	writeError(w, http.StatusBadRequest, "bad_request", want)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Serve listens on addr, which must be a loopback address, and serves h
// until ctx is cancelled. ready, if not nil, receives the bound address.
func Serve(ctx context.Context, addr string, h http.Handler, ready func(net.Addr)) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("localapi: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%w: %s", ErrNotLoopback, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("localapi: listen: %w", err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	// Requests in flight finish when the API stops; open status streams end
	// at once (they watch stopping).
	stopping := make(chan struct{})
	base := context.WithValue(context.Background(), stoppingKey{}, (<-chan struct{})(stopping))
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return base }}
	srv.RegisterOnShutdown(func() { close(stopping) })
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
		<-errc
		return nil
	}
}
