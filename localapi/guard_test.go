package localapi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/localapi"
)

// touchBackend counts API use; the guard tests call nothing else on it.
type touchBackend struct {
	localapi.Backend
	touched atomic.Int32
}

func (b *touchBackend) Touch(context.Context) error { b.touched.Add(1); return nil }

func (b *touchBackend) Status(context.Context) (agent.Status, error) {
	return agent.Status{State: agent.StateUpToDate}, nil
}

func guardServer(t *testing.T, token string) (*httptest.Server, *touchBackend) {
	t.Helper()
	b := &touchBackend{}
	srv := httptest.NewServer(localapi.Handler(b, localapi.Options{Token: token, Log: quietLog()}))
	t.Cleanup(srv.Close)
	return srv, b
}

func call(t *testing.T, method, url, auth string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return status(t, req)
}

func TestGuard_Methods(t *testing.T) {
	srv, b := guardServer(t, "tok")
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete, http.MethodPut} {
		for _, path := range []string{"/v1/status", "/v1/status/", "/v1/nothing", "/metrics"} {
			if got := call(t, m, srv.URL+path, ""); got != http.StatusUnauthorized {
				t.Errorf("%s %s without a token: %d, want 401", m, path, got)
			}
		}
	}
	if n := b.touched.Load(); n != 0 {
		t.Fatalf("refused requests counted as API use %d times", n)
	}
	if got := call(t, http.MethodGet, srv.URL+"/v1/openapi.json", ""); got != http.StatusOK || b.touched.Load() != 0 {
		t.Fatalf("public GET /v1/openapi.json: %d, touched %d; want 200 and no API use (anyone could keep the data from being wiped)", got, b.touched.Load())
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/v1/status", nil)
	req.Header.Set("Authorization", "bearer tok") // the scheme is case-insensitive
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("DELETE /v1/status: %d Allow %q, want 405 Allow GET", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if got := call(t, http.MethodGet, srv.URL+"/v1/status", "Bearer tok"); got != http.StatusOK || b.touched.Load() != 2 {
		t.Fatalf("GET /v1/status with the token: %d, touched %d; want 200 and 2 API uses", got, b.touched.Load())
	}
}

func TestGuard_EmptyToken(t *testing.T) {
	srv, _ := guardServer(t, "")
	for _, auth := range []string{"", "Bearer ", "Bearer", "Basic "} {
		if got := call(t, http.MethodGet, srv.URL+"/v1/status", auth); got != http.StatusUnauthorized {
			t.Errorf("empty token, Authorization %q: %d, want 401", auth, got)
		}
	}
}

func TestGuard_TooLarge(t *testing.T) {
	srv, _ := guardServer(t, "tok")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/signin", strings.NewReader(`{"user":"`+strings.Repeat("a", 10000)+`"}`))
	req.Header.Set("Authorization", "Bearer tok")
	if got := status(t, req); got != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized sign-in body: %d, want 413", got)
	}
}

// TestServe_EndsStreams: an open status stream does not hold the API up
// when it stops.
func TestServe_EndsStreams(t *testing.T) {
	h := localapi.Handler(&touchBackend{}, localapi.Options{Token: "tok", Log: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	addrc, errc := make(chan net.Addr, 1), make(chan error, 1)
	go func() { errc <- localapi.Serve(ctx, "127.0.0.1:0", h, func(a net.Addr) { addrc <- a }) }()
	addr := <-addrc
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr.String()+"/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer resp.Body.Close()
	go io.Copy(io.Discard, resp.Body)
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil || time.Since(start) > 2*time.Second {
			t.Fatalf("Serve returned %v after %v with a stream open, want nil within 2s", err, time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return with a stream open")
	}
}

// TestServe_FinishesRequests: a request in flight when the API stops is
// answered, not cut off.
func TestServe_FinishesRequests(t *testing.T) {
	inFlight, release := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inFlight)
		<-release
		if r.Context().Err() != nil {
			http.Error(w, "cancelled", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	addrc, errc := make(chan net.Addr, 1), make(chan error, 1)
	go func() { errc <- localapi.Serve(ctx, "127.0.0.1:0", slow, func(a net.Addr) { addrc <- a }) }()
	addr := <-addrc
	type answer struct {
		status int
		body   string
		err    error
	}
	answers := make(chan answer, 1)
	go func() {
		resp, err := http.Get("http://" + addr.String() + "/")
		if err != nil {
			answers <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers <- answer{resp.StatusCode, string(b), err}
	}()
	<-inFlight
	cancel()
	// The API is shutting down once it refuses new connections; only then
	// may the request in flight finish.
	fstest.Eventually(t, 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr.String(), 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the API still accepts connections after it was stopped")
	close(release)
	a := <-answers
	if a.err != nil || a.status != http.StatusOK || a.body != "done" {
		t.Fatalf("request in flight at shutdown: %d %q %v, want 200 done", a.status, a.body, a.err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
