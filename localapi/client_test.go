package localapi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

func TestNewClient(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:7480":         "http://127.0.0.1:7480",
		"http://127.0.0.1:7480/": "http://127.0.0.1:7480",
		"https://agent.local":    "https://agent.local",
	} {
		if got := localapi.NewClient(in, "t").BaseURL; got != want {
			t.Errorf("NewClient(%q).BaseURL = %q, want %q", in, got, want)
		}
	}
}

func TestClient_Status(t *testing.T) {
	e := startEnv(t)
	st, err := e.client.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.DeviceID != "tab-1" || st.User != "alice" || st.State != agent.StateUpToDate || st.OnlineOnly || !st.Connected ||
		len(st.OrgUnits) != 2 || st.LastSyncCompleted == nil || len(st.Channels) != 3 {
		t.Fatalf("status %+v", st)
	}
	// Without the scheme, as the CLI passes it.
	st2, err := localapi.NewClient(e.base[len("http://"):], e.token).Status(ctxT(t))
	if err != nil || st2.DeviceID != "tab-1" {
		t.Fatalf("status via host:port: %+v %v", st2, err)
	}
}

func TestClient_Records(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t)
	cases := []struct {
		q    store.Query
		want string
	}{
		{store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit}, "n-act-1,n-ev-1,n-ev-2,s-ev-1,s-fnd-1"},
		{store.Query{Channel: events.ChannelEvents, Unit: "north"}, "n-act-1,n-ev-1,n-ev-2"},
		{store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit, Kind: "event", Limit: 2, Offset: 1}, "n-ev-2,s-ev-1"},
		{store.Query{Channel: events.ChannelAdmin, Unit: ""}, "tenant-set-1"},
		{store.Query{Channel: events.ChannelDocuments, Unit: "south"}, ""},
	}
	for _, tc := range cases {
		recs, err := e.client.Records(ctx, tc.q)
		if err != nil {
			t.Fatalf("%+v: %v", tc.q, err)
		}
		if got := ids(recs); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.q, got, tc.want)
		}
		for _, r := range recs {
			if r.Version != e.versions[r.RecordID] || r.Body["title"] != "T "+r.RecordID {
				t.Errorf("record %+v: want version %d", r, e.versions[r.RecordID])
			}
		}
	}
	_, err := e.client.Records(ctx, store.Query{Channel: "gossip", Unit: store.AnyUnit})
	var apiErr *localapi.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || apiErr.Code != "bad_request" {
		t.Fatalf("bad channel: %v, want a 400 bad_request APIError", err)
	}
}

// TestClient_RecordsPage pages through a channel by key and looks a record
// up by id.
func TestClient_RecordsPage(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t)
	q := store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit, Limit: 3}
	var got []string
	for pages := 0; pages < 5; pages++ {
		p, err := e.client.RecordsPage(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(p.Records))
		if p.Next == "" {
			break
		}
		if q.After, err = localapi.ParseCursor(p.Next); err != nil {
			t.Fatal(err)
		}
	}
	if want := "n-act-1,n-ev-1,n-ev-2|s-ev-1,s-fnd-1"; strings.Join(got, "|") != want {
		t.Fatalf("pages %q, want %q", strings.Join(got, "|"), want)
	}
	recs, err := e.client.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "north", Kind: "event", RecordID: "n-ev-2"})
	if err != nil || ids(recs) != "n-ev-2" || recs[0].Version != e.versions["n-ev-2"] {
		t.Fatalf("lookup of n-ev-2: %+v %v", recs, err)
	}
}

func TestClient_Sync(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t)
	err := e.client.Sync(ctx, "bogus")
	var apiErr *localapi.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || apiErr.Code != "bad_request" || apiErr.Message == "" {
		t.Fatalf("bogus scope: %v, want a 400 bad_request APIError", err)
	}

	before := e.waitUpToDate(t, nil)
	e.broker.MustPublish(t, fstest.Change(t, "south", events.ChannelDocuments, "document", "s-doc-new", map[string]any{"title": "T s-doc-new"}))
	if err := e.client.Sync(ctx, agent.ScopeDocuments); err != nil {
		t.Fatal(err)
	}
	st := e.waitUpToDate(t, before.LastSyncCompleted)
	for _, c := range st.Channels {
		if c.Channel == events.ChannelDocuments && c.Records != 2 {
			t.Fatalf("documents after sync: %d records, want 2", c.Records)
		}
	}
}

func TestClient_Unreachable(t *testing.T) {
	c := localapi.NewClient("127.0.0.1:1", "t")
	if _, err := c.Status(context.Background()); err == nil {
		t.Fatal("no error from an unreachable API")
	}
}

// TestClient_ReusesConnections checks that a client's calls to a running
// agent share one keep-alive connection: a response body left unread after
// its JSON value (the encoder's newline) makes net/http close the
// connection, one new TCP connection per call.
func TestClient_ReusesConnections(t *testing.T) {
	e := startEnv(t)
	var dials atomic.Int32
	d := &net.Dialer{}
	c := localapi.NewClient(e.base, e.token)
	c.HTTP = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}}}
	ctx := ctxT(t)
	for i := 0; i < 10; i++ {
		if _, err := c.Status(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(ctx, agent.WriteRequest{OrgUnit: "south", Channel: "events", Kind: "finding",
			RecordID: fmt.Sprintf("reuse-%d", i), Body: map[string]any{"a": i}}); err != nil {
			t.Fatal(err)
		}
		if err := c.Resolve(ctx, "no-such-conflict", "discard"); err == nil {
			t.Fatal("resolving an unknown conflict succeeded")
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("40 calls opened %d connections, want 1", n)
	}
}
