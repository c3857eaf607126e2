package publish_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/publish"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newService(t *testing.T, units ...string) (*fstest.Broker, *publish.Service) {
	t.Helper()
	b := fstest.MustStartBroker(t, units...)
	return b, publish.NewService(b.Client.Publisher(), quietLog())
}

// serveNATS starts the service's NATS API on the broker and returns a
// publish.Client on a separate TCP connection.
func serveNATS(t *testing.T, b *fstest.Broker, svc *publish.Service) (*publish.Client, *nats.Conn) {
	t.Helper()
	sub, err := svc.Serve(b.Client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	nc, err := nats.Connect(b.URL(), nats.Name("publish-test"), b.ComponentOption(t, natsauth.RoleTool))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return publish.NewClient(nc), nc
}

func u64(v uint64) *uint64 { return &v }

func eventReq(id string, body map[string]any) publish.Request {
	return publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: id, Body: body}
}

// storedBody reads the latest change of a record from its stream and
// decodes its body.
func storedBody(t *testing.T, b *fstest.Broker, a events.Address) (*events.Envelope, map[string]any) {
	t.Helper()
	js, err := jetstream.New(b.Client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	name, err := events.OrgStream(a.OrgUnit)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctxT(t), name)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := a.Subject()
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctxT(t), subj)
	if err != nil {
		t.Fatalf("get %s: %v", subj, err)
	}
	e, err := events.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if len(e.Body) > 0 {
		if err := msgpack.Unmarshal(e.Body, &body); err != nil {
			t.Fatal(err)
		}
	}
	return e, body
}

func isInteger(v any) bool {
	switch reflect.ValueOf(v).Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func TestService_Publish(t *testing.T) {
	b, svc := newService(t, "north")
	ctx := ctxT(t)

	resp := svc.Publish(ctx, eventReq("r1", map[string]any{"title": "first"}))
	if resp.Error != nil {
		t.Fatalf("publish: %v", resp.Error)
	}
	if resp.Version == 0 || resp.Stream != "FS_ORG_north" || resp.Duplicate {
		t.Fatalf("response %+v: want a version on FS_ORG_north, not a duplicate", resp)
	}
	if resp.EventID == "" {
		t.Fatal("no event id generated for a request without one")
	}
	e, body := storedBody(t, b, events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r1"})
	if e.EventID != resp.EventID || e.Op != events.OpUpsert || body["title"] != "first" {
		t.Fatalf("stored %+v body %v, want event id %s, upsert, title first", e, body, resp.EventID)
	}

	second := svc.Publish(ctx, eventReq("r2", map[string]any{"title": "second"}))
	if second.Error != nil || second.EventID == resp.EventID || second.Version <= resp.Version {
		t.Fatalf("second publish %+v: want a new event id and a higher version than %d", second, resp.Version)
	}

	// An explicit event id is kept; the version of the stream moves on.
	given := eventReq("r3", map[string]any{"title": "third"})
	given.EventID = "evt-given-1"
	if r := svc.Publish(ctx, given); r.Error != nil || r.EventID != "evt-given-1" {
		t.Fatalf("publish with event id: %+v", r)
	}

	// Delete without body, tenant-wide admin data.
	del := svc.Publish(ctx, publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1", Op: "delete"})
	if del.Error != nil || del.Version == 0 {
		t.Fatalf("delete: %+v", del)
	}
	tenant := svc.Publish(ctx, publish.Request{Channel: "admin", Kind: "setting", RecordID: "s1", Body: map[string]any{"v": 1}})
	if tenant.Error != nil || tenant.Stream != events.TenantStream {
		t.Fatalf("tenant-wide publish: %+v", tenant)
	}

	// A kind the compliance app's catalogue does not list: kinds are open,
	// the tenant adds one by publishing it.
	newKind := svc.Publish(ctx, publish.Request{OrgUnit: "north", Channel: "events", Kind: "inspection_round", RecordID: "i1", Body: map[string]any{"v": 1}})
	if newKind.Error != nil {
		t.Fatalf("new kind: %+v", newKind)
	}
	if _, body := storedBody(t, b, events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "inspection_round", RecordID: "i1"}); body["v"] == nil {
		t.Fatalf("new kind stored %v", body)
	}
}

func TestService_Publish_Duplicate(t *testing.T) {
	_, svc := newService(t, "north")
	ctx := ctxT(t)
	r := eventReq("r1", map[string]any{"title": "once"})
	r.EventID = "evt-dup-1"
	first := svc.Publish(ctx, r)
	if first.Error != nil || first.Duplicate {
		t.Fatalf("first: %+v", first)
	}
	again := svc.Publish(ctx, r)
	if again.Error != nil {
		t.Fatalf("retry: %v", again.Error)
	}
	if !again.Duplicate || again.Version != first.Version || again.EventID != first.EventID {
		t.Fatalf("retry %+v, want duplicate of %+v", again, first)
	}
	// A different event id is a new change.
	r.EventID = "evt-dup-2"
	if third := svc.Publish(ctx, r); third.Error != nil || third.Duplicate || third.Version == first.Version {
		t.Fatalf("new event id: %+v", third)
	}
}

func TestService_Publish_Conflict(t *testing.T) {
	_, svc := newService(t, "north")
	ctx := ctxT(t)
	v1 := svc.Publish(ctx, eventReq("r1", map[string]any{"rev": 1}))
	if v1.Error != nil {
		t.Fatal(v1.Error)
	}
	r := eventReq("r1", map[string]any{"rev": 2})
	r.ExpectedVersion = u64(v1.Version)
	v2 := svc.Publish(ctx, r)
	if v2.Error != nil {
		t.Fatalf("publish at the current version: %v", v2.Error)
	}

	stale := eventReq("r1", map[string]any{"rev": 3})
	stale.ExpectedVersion = u64(v1.Version)
	resp := svc.Publish(ctx, stale)
	if resp.Error == nil || resp.Error.Code != publish.CodeConflict {
		t.Fatalf("stale expected version: %+v, want code conflict", resp)
	}
	if resp.Error.CurrentVersion == nil || *resp.Error.CurrentVersion != v2.Version {
		t.Fatalf("current_version %v, want %d", resp.Error.CurrentVersion, v2.Version)
	}
	if !errors.Is(resp.Error, publish.ErrConflict) || errors.Is(resp.Error, publish.ErrInvalid) {
		t.Fatalf("error %v does not match ErrConflict only", resp.Error)
	}

	// Expected version 0: the record must not exist yet.
	create := eventReq("r1", map[string]any{"rev": 4})
	create.ExpectedVersion = u64(0)
	if resp := svc.Publish(ctx, create); resp.Error == nil || resp.Error.Code != publish.CodeConflict {
		t.Fatalf("expected_version 0 on an existing record: %+v, want conflict", resp)
	}
	fresh := eventReq("r-new", map[string]any{"rev": 1})
	fresh.ExpectedVersion = u64(0)
	if resp := svc.Publish(ctx, fresh); resp.Error != nil {
		t.Fatalf("expected_version 0 on a new record: %v", resp.Error)
	}
}

func TestService_Publish_UnknownUnit(t *testing.T) {
	_, svc := newService(t, "north")
	r := eventReq("r1", map[string]any{"title": "x"})
	r.OrgUnit = "nowhere"
	resp := svc.Publish(ctxT(t), r)
	if resp.Error == nil || resp.Error.Code != publish.CodeUnknownUnit {
		t.Fatalf("got %+v, want code unknown_unit", resp)
	}
	if !errors.Is(resp.Error, publish.ErrUnknownUnit) {
		t.Fatalf("%v does not match ErrUnknownUnit", resp.Error)
	}
}

func TestService_Publish_Invalid(t *testing.T) {
	b, svc := newService(t, "north")
	body := map[string]any{"title": "x"}
	cases := []struct {
		name string
		r    publish.Request
	}{
		{"bad channel", publish.Request{OrgUnit: "north", Channel: "gossip", Kind: "event", RecordID: "r1", Body: body}},
		{"bad kind", publish.Request{OrgUnit: "north", Channel: "events", Kind: "space.ship", RecordID: "r1", Body: body}},
		{"no kind", publish.Request{OrgUnit: "north", Channel: "events", RecordID: "r1", Body: body}},
		{"dotted record id", publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "a.b", Body: body}},
		{"wildcard record id", publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "*", Body: body}},
		{"empty record id", publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", Body: body}},
		{"delete with body", publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1", Op: "delete", Body: body}},
		{"upsert without body", publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1", Op: "upsert"}},
		{"default op without body", publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1"}},
		{"bad op", publish.Request{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1", Op: "merge", Body: body}},
		{"tenant-wide events", publish.Request{Channel: "events", Kind: "event", RecordID: "r1", Body: body}},
		{"bad event id", publish.Request{EventID: "a b", OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r1", Body: body}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := svc.Publish(ctxT(t), tc.r)
			if resp.Error == nil || resp.Error.Code != publish.CodeInvalid {
				t.Fatalf("got %+v, want code invalid", resp)
			}
			if resp.Error.Message == "" || !errors.Is(resp.Error, publish.ErrInvalid) {
				t.Fatalf("error %+v: want a message and ErrInvalid", resp.Error)
			}
		})
	}
	st, err := b.Client.UnitState(ctxT(t), "north")
	if err != nil {
		t.Fatal(err)
	}
	if st.Msgs != 0 {
		t.Fatalf("invalid requests stored %d messages", st.Msgs)
	}
}

func TestClient_Publish(t *testing.T) {
	b, svc := newService(t, "north")
	c, _ := serveNATS(t, b, svc)
	ctx := ctxT(t)

	ok, err := c.Publish(ctx, eventReq("r1", map[string]any{"title": "over nats"}))
	if err != nil {
		t.Fatal(err)
	}
	if ok.Version == 0 || ok.EventID == "" || ok.Stream != "FS_ORG_north" {
		t.Fatalf("response %+v", ok)
	}
	st, err := b.Client.UnitState(ctx, "north")
	if err != nil || st.LastSeq != ok.Version {
		t.Fatalf("stream state %+v (%v), want last seq %d", st, err, ok.Version)
	}

	dupReq := eventReq("r1", map[string]any{"title": "over nats"})
	dupReq.EventID = ok.EventID
	if dup, err := c.Publish(ctx, dupReq); err != nil || !dup.Duplicate || dup.Version != ok.Version {
		t.Fatalf("duplicate: %+v, %v", dup, err)
	}

	stale := eventReq("r1", map[string]any{"title": "stale"})
	stale.ExpectedVersion = u64(ok.Version + 100)
	resp, err := c.Publish(ctx, stale)
	var perr *publish.Error
	if !errors.As(err, &perr) || !errors.Is(err, publish.ErrConflict) {
		t.Fatalf("stale: err %v, want *publish.Error matching ErrConflict", err)
	}
	if perr.CurrentVersion == nil || *perr.CurrentVersion != ok.Version || resp.Error != perr {
		t.Fatalf("conflict error %+v, want current version %d", perr, ok.Version)
	}
	if errors.Is(err, publish.ErrUnknownUnit) || errors.Is(err, publish.ErrInvalid) {
		t.Fatalf("conflict %v matches other sentinels", err)
	}

	unknown := eventReq("r1", map[string]any{"title": "x"})
	unknown.OrgUnit = "south"
	if _, err := c.Publish(ctx, unknown); !errors.Is(err, publish.ErrUnknownUnit) || !errors.As(err, &perr) {
		t.Fatalf("unknown unit: %v, want ErrUnknownUnit", err)
	}

	bad := eventReq("a.b", map[string]any{"title": "x"})
	if _, err := c.Publish(ctx, bad); !errors.Is(err, publish.ErrInvalid) || !errors.As(err, &perr) || perr.Code != publish.CodeInvalid {
		t.Fatalf("invalid: %v, want ErrInvalid", err)
	}
}

func TestClient_Publish_KeepsIntegers(t *testing.T) {
	b, svc := newService(t, "north")
	c, _ := serveNATS(t, b, svc)
	body := map[string]any{
		"count":  3,
		"big":    int64(9007199254740993), // 2^53+1: not representable as float64
		"neg":    -42,
		"ratio":  1.5,
		"nested": map[string]any{"k": 7},
		"list":   []any{1, 2.5, "x"},
		"title":  "ints",
	}
	if _, err := c.Publish(ctxT(t), eventReq("r-int", body)); err != nil {
		t.Fatal(err)
	}
	_, got := storedBody(t, b, events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r-int"})
	for _, k := range []string{"count", "big", "neg"} {
		if !isInteger(got[k]) {
			t.Fatalf("body[%q] = %v (%T), want an integer", k, got[k], got[k])
		}
	}
	if reflect.ValueOf(got["big"]).Int() != 9007199254740993 || reflect.ValueOf(got["count"]).Int() != 3 || reflect.ValueOf(got["neg"]).Int() != -42 {
		t.Fatalf("integer values changed: %v", got)
	}
	if f, ok := got["ratio"].(float64); !ok || f != 1.5 {
		t.Fatalf("ratio = %v (%T), want float64 1.5", got["ratio"], got["ratio"])
	}
	nested, _ := got["nested"].(map[string]any)
	if !isInteger(nested["k"]) {
		t.Fatalf("nested.k = %v (%T), want an integer", nested["k"], nested["k"])
	}
	list, _ := got["list"].([]any)
	if len(list) != 3 || !isInteger(list[0]) || list[1] != 2.5 || list[2] != "x" {
		t.Fatalf("list = %#v, want [int 1, 2.5, x]", got["list"])
	}
}

func TestService_Serve_UnknownFields(t *testing.T) {
	b, svc := newService(t, "north")
	_, nc := serveNATS(t, b, svc)
	send := func(raw string) publish.Response {
		t.Helper()
		msg, err := nc.RequestWithContext(ctxT(t), publish.Subject, []byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		var resp publish.Response
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			t.Fatalf("response %q: %v", msg.Data, err)
		}
		return resp
	}
	resp := send(`{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":{"a":1},"colour":"red"}`)
	if resp.Error == nil || resp.Error.Code != publish.CodeInvalid || !strings.Contains(resp.Error.Message, "colour") {
		t.Fatalf("unknown field: %+v, want code invalid naming the field", resp)
	}
	if resp := send(`{"org_unit":`); resp.Error == nil || resp.Error.Code != publish.CodeInvalid {
		t.Fatalf("truncated JSON: %+v, want code invalid", resp)
	}
	if resp := send(`{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":[1]}`); resp.Error == nil || resp.Error.Code != publish.CodeInvalid {
		t.Fatalf("body not an object: %+v, want code invalid", resp)
	}
	st, err := b.Client.UnitState(ctxT(t), "north")
	if err != nil || st.Msgs != 0 {
		t.Fatalf("rejected requests stored messages: %+v %v", st, err)
	}
	// The same request without the unknown field is accepted.
	if resp := send(`{"org_unit":"north","channel":"events","kind":"event","record_id":"r1","body":{"a":1}}`); resp.Error != nil || resp.Version == 0 {
		t.Fatalf("valid raw request: %+v", resp)
	}
}

func TestError_Is(t *testing.T) {
	cases := []struct {
		code string
		want error
	}{
		{publish.CodeInvalid, publish.ErrInvalid},
		{publish.CodeConflict, publish.ErrConflict},
		{publish.CodeUnknownUnit, publish.ErrUnknownUnit},
		{publish.CodeTooLarge, publish.ErrTooLarge},
	}
	all := []error{publish.ErrInvalid, publish.ErrConflict, publish.ErrUnknownUnit, publish.ErrTooLarge}
	for _, tc := range cases {
		e := &publish.Error{Code: tc.code, Message: "m"}
		for _, s := range all {
			// A request too large is also an invalid one.
			want := s == tc.want || tc.code == publish.CodeTooLarge && s == publish.ErrInvalid
			if got := errors.Is(e, s); got != want {
				t.Errorf("code %s: errors.Is(%v) = %v", tc.code, s, got)
			}
		}
		if !strings.Contains(e.Error(), tc.code) {
			t.Errorf("Error() %q does not name code %s", e.Error(), tc.code)
		}
	}
	internal := &publish.Error{Code: publish.CodeInternal}
	for _, s := range all {
		if errors.Is(internal, s) {
			t.Errorf("internal error matches %v", s)
		}
	}
}

func TestService_Serve_EmptyBody(t *testing.T) {
	b, svc := newService(t, "north")
	_, nc := serveNATS(t, b, svc)
	msg, err := nc.RequestWithContext(ctxT(t), publish.Subject,
		[]byte(`{"org_unit":"north","channel":"events","kind":"event","record_id":"r-empty","body":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	var resp publish.Response
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Error != nil || resp.Version == 0 {
		t.Fatalf("upsert with an empty JSON object body: %+v, want it published", resp)
	}
	e, body := storedBody(t, b, events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r-empty"})
	if e.Op != events.OpUpsert || body == nil || len(body) != 0 {
		t.Fatalf("stored %+v body %#v, want an upsert with an empty map", e, body)
	}
}

func TestClient_Publish_EmptyBody(t *testing.T) {
	b, svc := newService(t, "north")
	c, _ := serveNATS(t, b, svc)
	resp, err := c.Publish(ctxT(t), eventReq("r-empty", map[string]any{}))
	if err != nil || resp.Version == 0 {
		t.Fatalf("upsert with an empty body over the client: %+v %v", resp, err)
	}
}
