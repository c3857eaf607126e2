package broker_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/publish"
)

// httpReq is one request to the broker's HTTP endpoints.
type httpReq struct {
	method, path, body string
	header             map[string]string
	host               string // Host header; default the listen address
}

// do sends r and returns the status, the headers and the decoded error
// code of the answer ("" when it carries none).
func do(t *testing.T, b *broker.Broker, r httpReq) (int, http.Header, string) {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodPost
	}
	req, err := http.NewRequest(r.method, b.HTTPURL()+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	if r.host != "" {
		req.Host = r.host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pr publish.Response
	json.NewDecoder(resp.Body).Decode(&pr)
	code := ""
	if pr.Error != nil {
		code = pr.Error.Code
	}
	return resp.StatusCode, resp.Header, code
}

// TestBroker_HTTPPublish_Auth: the HTTP publish API takes only requests
// with an integration's token, for a served Host, same-origin, JSON, under
// the size limit and for the integration's own units; each refusal has
// its status and code, and only the valid request reaches the stream.
func TestBroker_HTTPPublish_Auth(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north", "south"))
	a := b.Authority()
	tok := fstest.MustIntegrationToken(t, a, "crm", "north")
	revoked := fstest.MustIntegrationToken(t, a, "old", "north")
	if _, err := a.Revoke(natsauth.KindIntegration, "old"); err != nil {
		t.Fatal(err)
	}
	body := func(unit, id string) string {
		return `{"org_unit":"` + unit + `","channel":"events","kind":"event","record_id":"` + id + `","body":{"x":1}}`
	}
	auth := func(tok string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
	}
	with := func(h map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for kk, vv := range h {
			if kk != k {
				out[kk] = vv
			}
		}
		return out
	}
	huge := `{"org_unit":"north","channel":"events","kind":"event","record_id":"big","body":{"x":"` + strings.Repeat("a", publish.MaxRequestSize) + `"}}`
	for _, c := range []struct {
		name   string
		req    httpReq
		status int
		code   string
	}{
		{"no token", httpReq{body: body("north", "r"), header: map[string]string{"Content-Type": "application/json"}}, 401, publish.CodeUnauthorized},
		{"wrong token", httpReq{body: body("north", "r"), header: auth("fsi_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")}, 401, publish.CodeUnauthorized},
		{"not bearer", httpReq{body: body("north", "r"), header: with(auth(tok), "Authorization", "Basic "+tok)}, 401, publish.CodeUnauthorized},
		{"revoked token", httpReq{body: body("north", "r"), header: auth(revoked)}, 401, publish.CodeUnauthorized},
		{"metrics token", httpReq{body: body("north", "r"), header: auth(metricsToken(t, b))}, 401, publish.CodeUnauthorized},
		{"foreign host", httpReq{body: body("north", "r"), header: auth(tok), host: "evil.example:8222"}, 403, publish.CodeForbidden},
		{"cross origin", httpReq{body: body("north", "r"), header: with(auth(tok), "Origin", "http://evil.example")}, 403, publish.CodeForbidden},
		{"null origin", httpReq{body: body("north", "r"), header: with(auth(tok), "Origin", "null")}, 403, publish.CodeForbidden},
		{"text/plain", httpReq{body: body("north", "r"), header: with(auth(tok), "Content-Type", "text/plain")}, 415, publish.CodeUnsupportedMedia},
		{"form post", httpReq{body: "a=b", header: with(auth(tok), "Content-Type", "application/x-www-form-urlencoded")}, 415, publish.CodeUnsupportedMedia},
		{"no content type", httpReq{body: body("north", "r"), header: with(auth(tok), "Content-Type", "")}, 415, publish.CodeUnsupportedMedia},
		{"oversized", httpReq{body: huge, header: auth(tok)}, 413, publish.CodeTooLarge},
		{"other unit", httpReq{body: body("south", "r"), header: auth(tok)}, 403, publish.CodeForbidden},
		{"tenant-wide", httpReq{body: `{"org_unit":"","channel":"admin","kind":"user","record_id":"u1","body":{"x":1}}`, header: auth(tok)}, 403, publish.CodeForbidden},
	} {
		c.req.path = "/v1/publish"
		status, hdr, code := do(t, b, c.req)
		if status != c.status || code != c.code {
			t.Errorf("%s: %d %q, want %d %q", c.name, status, code, c.status, c.code)
		}
		if status == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: 401 without WWW-Authenticate: Bearer", c.name)
		}
	}
	for _, unit := range []string{"north", "south", ""} {
		if st, err := b.Client().UnitState(ctxT(t), unit); err != nil || st.Msgs != 0 {
			t.Fatalf("unit %q after the refused requests: %+v %v, want empty", unit, st, err)
		}
	}

	// Accepted: the token's integration on its own unit, same-origin, a
	// JSON content type with parameters, an allowed host name.
	ok := httpReq{path: "/v1/publish", body: body("north", "good"), host: "localhost",
		header: map[string]string{"Authorization": "bearer " + tok, "Content-Type": "application/json; charset=utf-8", "Origin": "http://localhost"}}
	if status, _, code := do(t, b, ok); status != http.StatusOK || code != "" {
		t.Fatalf("valid request: %d %q", status, code)
	}
	v, err := b.Client().Publisher().Version(ctxT(t), events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "good"})
	if err != nil || v == 0 {
		t.Fatalf("the accepted change is not in FS_ORG_north: %d %v", v, err)
	}

	// Revoking the integration stops its token at the next request.
	if _, err := a.Revoke(natsauth.KindIntegration, "crm"); err != nil {
		t.Fatal(err)
	}
	ok.body = body("north", "after-revoke")
	if status, _, code := do(t, b, ok); status != http.StatusUnauthorized || code != publish.CodeUnauthorized {
		t.Fatalf("after revoke: %d %q, want 401", status, code)
	}
}

// TestBroker_HTTP_NoCORS: no answer carries CORS headers, a preflight is
// not allowed, /metrics needs the metrics token and /healthz is open.
func TestBroker_HTTP_NoCORS(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	tok := fstest.MustIntegrationToken(t, b.Authority(), "crm", "north")
	mt := metricsToken(t, b)
	cors := map[string]string{"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
	for _, c := range []struct {
		name   string
		req    httpReq
		status int
	}{
		{"preflight", httpReq{method: http.MethodOptions, path: "/v1/publish", header: cors}, http.StatusForbidden},
		{"same-origin preflight", httpReq{method: http.MethodOptions, path: "/v1/publish",
			header: map[string]string{"Authorization": "Bearer " + tok, "Access-Control-Request-Method": "POST"}}, http.StatusMethodNotAllowed},
		{"metrics without token", httpReq{method: http.MethodGet, path: "/metrics"}, http.StatusUnauthorized},
		{"metrics with a publish token", httpReq{method: http.MethodGet, path: "/metrics", header: map[string]string{"Authorization": "Bearer " + tok}}, http.StatusUnauthorized},
		{"metrics, foreign host", httpReq{method: http.MethodGet, path: "/metrics", header: map[string]string{"Authorization": "Bearer " + mt}, host: "evil.example"}, http.StatusForbidden},
		{"metrics", httpReq{method: http.MethodGet, path: "/metrics", header: map[string]string{"Authorization": "Bearer " + mt}}, http.StatusOK},
		{"healthz", httpReq{method: http.MethodGet, path: "/healthz", header: cors}, http.StatusOK},
	} {
		status, hdr, _ := do(t, b, c.req)
		if status != c.status {
			t.Errorf("%s: %d, want %d", c.name, status, c.status)
		}
		for k := range hdr {
			if strings.HasPrefix(strings.ToLower(k), "access-control-") {
				t.Errorf("%s: CORS header %s: %v", c.name, k, hdr[k])
			}
		}
	}
}
