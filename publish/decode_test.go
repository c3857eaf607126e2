package publish_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/publish"
)

// deepJSON is a JSON object whose maps nest depth levels deep.
func deepJSON(depth int) string {
	return strings.Repeat(`{"n":`, depth-1) + "{}" + strings.Repeat("}", depth-1)
}

func deepBody(depth int) map[string]any {
	m := map[string]any{}
	for i := 1; i < depth; i++ {
		m = map[string]any{"n": m}
	}
	return m
}

// wantNothingStored fails if the north stream holds any message.
func wantNothingStored(t *testing.T, b *fstest.Broker) {
	t.Helper()
	st, err := b.Client.UnitState(ctxT(t), "north")
	if err != nil || st.Msgs != 0 {
		t.Fatalf("refused requests stored %d messages (%v)", st.Msgs, err)
	}
}

// TestService_Publish_PoisonBody: bodies the Go API could turn into
// msgpack that is a map only by its first byte (non-string keys,
// extension types such as timestamps, NaN, unbounded nesting) are refused
// with code invalid, naming where in the body the problem is.
func TestService_Publish_PoisonBody(t *testing.T) {
	b, svc := newService(t, "north")
	cases := []struct {
		name string
		body map[string]any
		at   string
	}{
		{"nested integer keys", map[string]any{"m": map[int]any{1: "x"}}, "body.m"},
		{"integer keys in a list", map[string]any{"l": []any{map[int]string{2: "y"}}}, "body.l[0]"},
		{"timestamp", map[string]any{"at": time.Unix(1700000000, 0)}, "body.at"},
		{"NaN", map[string]any{"x": math.NaN()}, "body.x"},
		{"too deep", deepBody(events.MaxBodyDepth + 1), "body.n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := svc.Publish(ctxT(t), eventReq("r1", tc.body))
			if resp.Error == nil || !errors.Is(resp.Error, publish.ErrInvalid) || !strings.Contains(resp.Error.Message, tc.at) {
				t.Fatalf("got %+v, want code invalid naming %s", resp, tc.at)
			}
		})
	}
	wantNothingStored(t, b)
	if resp := svc.Publish(ctxT(t), eventReq("r1", deepBody(events.MaxBodyDepth))); resp.Error != nil {
		t.Fatalf("a body nested exactly MaxBodyDepth deep: %+v", resp.Error)
	}
}

// strictCases are requests both transports must refuse: status is the
// HTTP answer, code the error code.
func strictCases() []struct {
	name, raw, code string
	status          int
} {
	good := `{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":{"a":1}}`
	huge := `{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":{"a":"` +
		strings.Repeat("x", publish.MaxRequestSize) + `"}}`
	bigBody := `{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":{"a":"` +
		strings.Repeat("x", events.MaxBodySize) + `"}}`
	deep := `{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":` + deepJSON(events.MaxBodyDepth+1) + `}`
	return []struct {
		name, raw, code string
		status          int
	}{
		{"second object", good + good, publish.CodeInvalid, http.StatusBadRequest},
		{"second object after a newline", good + "\n" + good, publish.CodeInvalid, http.StatusBadRequest},
		{"trailing garbage", good + " x", publish.CodeInvalid, http.StatusBadRequest},
		{"trailing bracket", good + "}", publish.CodeInvalid, http.StatusBadRequest},
		{"trailing number", good + " 1", publish.CodeInvalid, http.StatusBadRequest},
		{"too deep", deep, publish.CodeInvalid, http.StatusBadRequest},
		{"body over MaxBodySize", bigBody, publish.CodeTooLarge, http.StatusRequestEntityTooLarge},
		{"request over MaxRequestSize", huge, publish.CodeTooLarge, http.StatusRequestEntityTooLarge},
	}
}

func TestService_Serve_StrictInput(t *testing.T) {
	b, svc := newService(t, "north")
	_, nc := serveNATS(t, b, svc)
	for _, tc := range strictCases() {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := nc.RequestWithContext(ctxT(t), publish.Subject, []byte(tc.raw))
			if err != nil {
				t.Fatal(err)
			}
			var resp publish.Response
			if err := json.Unmarshal(msg.Data, &resp); err != nil {
				t.Fatalf("response %q: %v", msg.Data, err)
			}
			if resp.Error == nil || resp.Error.Code != tc.code || resp.Error.Message == "" {
				t.Fatalf("got %+v, want code %s with a message", resp, tc.code)
			}
		})
	}
	wantNothingStored(t, b)
	// Trailing white space is not trailing data.
	good := `{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":{"a":1}}` + " \n\t"
	msg, err := nc.RequestWithContext(ctxT(t), publish.Subject, []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	var resp publish.Response
	if err := json.Unmarshal(msg.Data, &resp); err != nil || resp.Error != nil || resp.Version == 0 {
		t.Fatalf("request with trailing white space: %+v (%v), want published", resp, err)
	}
}

// asCaller serves h to requests authenticated as c (what the broker's
// token check does).
func asCaller(h http.Handler, c publish.Caller) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(publish.WithCaller(r.Context(), c)))
	})
}

// TestService_ServeHTTP_Caller: without an authenticated caller nothing
// is published (401); a caller publishes to its own units only (403), and
// only JSON (415).
func TestService_ServeHTTP_Caller(t *testing.T) {
	b, svc := newService(t, "north", "south")
	anon := httptest.NewServer(svc)
	t.Cleanup(anon.Close)
	crm := httptest.NewServer(asCaller(svc, publish.Caller{Name: "crm", Units: []string{"north"}}))
	t.Cleanup(crm.Close)
	body := func(unit string) string {
		return `{"org_unit":"` + unit + `","channel":"events","kind":"event","record_id":"r1","body":{"a":1}}`
	}
	for _, c := range []struct {
		name, url, ctype, body string
		status                 int
		code                   string
	}{
		{"no caller", anon.URL, "application/json", body("north"), http.StatusUnauthorized, publish.CodeUnauthorized},
		{"other unit", crm.URL, "application/json", body("south"), http.StatusForbidden, publish.CodeForbidden},
		{"tenant-wide", crm.URL, "application/json", body(""), http.StatusForbidden, publish.CodeForbidden},
		{"text/plain", crm.URL, "text/plain", body("north"), http.StatusUnsupportedMediaType, publish.CodeUnsupportedMedia},
	} {
		resp, err := http.Post(c.url, c.ctype, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		var r publish.Response
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode != c.status || r.Error == nil || r.Error.Code != c.code {
			t.Errorf("%s: %d %+v, want %d %s", c.name, resp.StatusCode, r.Error, c.status, c.code)
		}
	}
	for _, unit := range []string{"north", "south", ""} {
		if st, err := b.Client.UnitState(ctxT(t), unit); err != nil || st.Msgs != 0 {
			t.Fatalf("unit %q: refused requests stored %d messages (%v)", unit, st.Msgs, err)
		}
	}
	if !errors.Is(&publish.Error{Code: publish.CodeForbidden}, publish.ErrForbidden) {
		t.Fatal("code forbidden does not match ErrForbidden")
	}
}

func TestService_ServeHTTP_StrictInput(t *testing.T) {
	b, svc := newService(t, "north")
	srv := httptest.NewServer(asCaller(svc, publish.Caller{Name: "test", Units: []string{"north"}}))
	t.Cleanup(srv.Close)
	post := func(t *testing.T, raw string) (int, publish.Response) {
		t.Helper()
		resp, err := srv.Client().Post(srv.URL, "application/json", bytes.NewReader([]byte(raw)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r publish.Response
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatalf("answer %d: %v", resp.StatusCode, err)
		}
		return resp.StatusCode, r
	}
	for _, tc := range strictCases() {
		t.Run(tc.name, func(t *testing.T) {
			status, r := post(t, tc.raw)
			if status != tc.status || r.Error == nil || r.Error.Code != tc.code || r.Error.Message == "" {
				t.Fatalf("got %d %+v, want %d with code %s and a message", status, r, tc.status, tc.code)
			}
		})
	}
	wantNothingStored(t, b)
	status, r := post(t, `{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":{"a":1}}`+"\n")
	if status != http.StatusOK || r.Error != nil || r.Version == 0 {
		t.Fatalf("valid request: %d %+v", status, r)
	}
}

func TestDecodeBody(t *testing.T) {
	if m, err := publish.DecodeBody([]byte(` {"n": 9007199254740993, "s": "x"} `)); err != nil || m["n"] != int64(9007199254740993) {
		t.Fatalf("DecodeBody = %v, %v", m, err)
	}
	for _, bad := range []string{`{"a":1}{"b":2}`, `{"a":1} x`, `[1]`, `null`, `{"a":`, ``} {
		if m, err := publish.DecodeBody([]byte(bad)); err == nil {
			t.Errorf("DecodeBody(%q) = %v, want an error", bad, m)
		}
	}
}
