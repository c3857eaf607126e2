package localapi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/localapi"
)

func TestEnsureToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", localapi.TokenFileName)
	if _, err := localapi.ReadToken(path); err == nil {
		t.Fatal("ReadToken of a missing file: no error")
	}
	tok, err := localapi.EnsureToken(path)
	if err != nil || len(tok) != 64 {
		t.Fatalf("EnsureToken = %q, %v; want 64 hex characters", tok, err)
	}
	again, err := localapi.EnsureToken(path)
	if err != nil || again != tok {
		t.Fatalf("second EnsureToken = %q, %v; want the same token", again, err)
	}
	if read, err := localapi.ReadToken(path); err != nil || read != tok {
		t.Fatalf("ReadToken = %q, %v", read, err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("token file mode %v (%v), want 0600: readable by the user only", fi.Mode().Perm(), err)
		}
		os.Chmod(path, 0o644)
		if _, err := localapi.EnsureToken(path); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Fatalf("EnsureToken left mode %v on an existing file", fi.Mode().Perm())
		}
	}
}

// TestHandler_RequiresToken calls every described operation without the
// token, and with a wrong one: all but the public ones are refused.
func TestHandler_RequiresToken(t *testing.T) {
	e := startEnv(t)
	for path, ops := range loadOpenAPI(t).Paths {
		for method, op := range ops {
			public := op.Security != nil && len(*op.Security) == 0
			for _, auth := range []string{"", "Bearer " + strings.Repeat("0", 64), "Bearer ", e.token} {
				req, _ := http.NewRequest(strings.ToUpper(method), e.base+strings.NewReplacer("{id}", "x", "{action}", "undo").Replace(path), nil)
				if auth != "" && auth != e.token {
					req.Header.Set("Authorization", auth)
				}
				if auth == e.token {
					req.AddCookie(&http.Cookie{Name: "fieldsync_token", Value: "wrong"})
				}
				got := status(t, req)
				if refused := got == http.StatusUnauthorized; refused == public {
					t.Errorf("%s %s with %q: %d (public %v)", method, path, auth, got, public)
				}
			}
		}
	}
}

func status(t *testing.T, req *http.Request) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestHandler_ForeignHost(t *testing.T) {
	e := startEnv(t)
	for _, host := range []string{"evil.example:80", "192.0.2.7", "fieldsync.local"} {
		req, _ := http.NewRequest(http.MethodGet, e.base+"/v1/status", nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+e.token)
		if got := status(t, req); got != http.StatusForbidden {
			t.Errorf("Host %q: %d, want 403 (DNS rebinding guard)", host, got)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, e.base+"/v1/status", nil)
	req.Host = "localhost"
	req.Header.Set("Authorization", "Bearer "+e.token)
	if got := status(t, req); got != http.StatusOK {
		t.Errorf("Host localhost: %d, want 200", got)
	}
}

// TestHandler_NoAmbientCredentials: only the Authorization header counts.
// A cookie holding the right token is refused (browsers send cookies to
// every port of 127.0.0.1), and the page never sets one.
func TestHandler_NoAmbientCredentials(t *testing.T) {
	e := startEnv(t)
	req, _ := http.NewRequest(http.MethodGet, e.base+"/v1/status", nil)
	req.AddCookie(&http.Cookie{Name: "fieldsync_token", Value: e.token})
	if got := status(t, req); got != http.StatusUnauthorized {
		t.Fatalf("GET /v1/status with the token in a cookie: %d, want 401", got)
	}
	resp, err := http.Get(e.base + "/?token=" + e.token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(resp.Cookies()) != 0 || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /?token=: %d with cookies %v, want the page and no cookie", resp.StatusCode, resp.Cookies())
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"frame-ancestors 'none'", "script-src 'sha256-", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("page CSP %q lacks %q", csp, want)
		}
	}
}

// TestServe_NotOnOtherAddresses dials the agent's port on every
// non-loopback address of this machine: nothing answers.
func TestServe_NotOnOtherAddresses(t *testing.T) {
	e := startEnv(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.base, "http://"))
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		tried++
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ipn.IP.String(), port), time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("the local API answered on %s:%s", ipn.IP, port)
		}
	}
	if tried == 0 {
		t.Skip("this machine has no non-loopback address to dial")
	}
	t.Logf("dialled %d non-loopback addresses on port %s: all refused", tried, port)
}

func TestHandler_Metrics(t *testing.T) {
	e := startEnv(t)
	req, _ := http.NewRequest(http.MethodGet, e.base+"/metrics", nil)
	resp, err := e.send(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	// startEnv's initial sync applied 5 events (3 north, 2 south).
	for _, want := range []string{`fieldsync_agent_records_applied_total{channel="events"} 5`, `fieldsync_agent_sync_duration_seconds_count{outcome="ok",scope="full"} 1`} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Fatalf("GET /metrics: %d, want a line %q in\n%s", resp.StatusCode, want, b)
		}
	}
}
