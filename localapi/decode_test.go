package localapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

// callsBackend records the requests the handlers pass on; only what
// decodes reaches it.
type callsBackend struct {
	touchBackend
	mu    sync.Mutex
	calls []string
}

func (b *callsBackend) record(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, s)
}

func (b *callsBackend) taken() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.calls
	b.calls = nil
	return out
}

func (b *callsBackend) Write(_ context.Context, r agent.WriteRequest) (store.Mutation, error) {
	b.record("write " + r.RecordID)
	return store.Mutation{MutationID: "m1", State: store.StateQueued}, nil
}

func (b *callsBackend) SignIn(_ context.Context, user string) error {
	b.record("signin " + user)
	return nil
}

func (b *callsBackend) RequestSync(s agent.Scope) error { b.record("sync " + string(s)); return nil }

func (b *callsBackend) SetRefreshMode(_ context.Context, on bool) error {
	b.record("refresh " + map[bool]string{true: "on", false: "off"}[on])
	return nil
}

// TestHandler_StrictInput: every route that reads a JSON body takes
// exactly one object: a second object or trailing data is 400, an
// oversized body 413, and neither reaches the agent.
func TestHandler_StrictInput(t *testing.T) {
	b := &callsBackend{}
	srv := httptest.NewServer(localapi.Handler(b, localapi.Options{Token: "tok", Log: quietLog()}))
	t.Cleanup(srv.Close)
	post := func(t *testing.T, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		return status(t, req)
	}
	routes := []struct {
		path, good, call, big string
		ok                    int
	}{
		{"/v1/records", `{"org_unit":"north","channel":"events","kind":"event","id":"r1","body":{"a":1}}`, "write r1",
			`{"org_unit":"north","channel":"events","kind":"event","id":"r1","body":{"a":"` + strings.Repeat("x", 4*events.MaxBodySize) + `"}}`,
			http.StatusAccepted},
		{"/v1/signin", `{"user":"alice"}`, "signin alice", `{"user":"` + strings.Repeat("a", 5000) + `"}`, http.StatusOK},
		{"/v1/sync", `{"scope":"events"}`, "sync events", `{"scope":"` + strings.Repeat("a", 5000) + `"}`, http.StatusAccepted},
		{"/v1/settings", `{"refresh_mode":false}`, "refresh off", `{"refresh_mode":false,"x":"` + strings.Repeat("a", 5000) + `"}`, http.StatusOK},
	}
	for _, rt := range routes {
		t.Run(rt.path, func(t *testing.T) {
			for _, bad := range []string{rt.good + rt.good, rt.good + "\n" + rt.good, rt.good + " x", rt.good + "}", rt.good + " 1", rt.good + `"`} {
				if got := post(t, rt.path, bad); got != http.StatusBadRequest {
					t.Errorf("POST %s %q: %d, want 400", rt.path, bad, got)
				}
			}
			if got := post(t, rt.path, rt.big); got != http.StatusRequestEntityTooLarge {
				t.Errorf("POST %s with an oversized body: %d, want 413", rt.path, got)
			}
			if calls := b.taken(); len(calls) != 0 {
				t.Fatalf("refused requests reached the agent: %v", calls)
			}
			if got := post(t, rt.path, rt.good+" \r\n\t"); got != rt.ok {
				t.Fatalf("POST %s %s with trailing white space: %d, want %d", rt.path, rt.good, got, rt.ok)
			}
			if calls := b.taken(); len(calls) != 1 || calls[0] != rt.call {
				t.Fatalf("agent got %v, want [%s]", calls, rt.call)
			}
		})
	}
}
