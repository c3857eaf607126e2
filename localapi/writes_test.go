package localapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

// startWriteEnv starts a real broker holding one server record
// (north/events/event/srv-1, {"title": "T srv-1", "by": "server"}), a real
// agent with a 50ms autosync and its local API, and waits for the initial
// sync. Ingest is not running yet: call startIngest, so a test can look at
// a write while it is certainly still pending.
func startWriteEnv(t *testing.T) *env {
	t.Helper()
	e := &env{broker: fstest.MustStartBroker(t, "north", "south"), versions: map[string]uint64{}}
	e.versions["srv-1"] = e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "srv-1",
		map[string]any{"title": "T srv-1", "by": "server"}))

	cfg := agent.Config{RefreshMode: blockingMode(), DeviceID: "tab-w", User: "alice", OrgUnits: []string{"north", "south"}, BrokerURL: e.broker.URL(),
		DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", StallTimeout: 5 * time.Second, AutosyncInterval: 50 * time.Millisecond}
	e.run(t, cfg)
	return e
}

// startIngest runs the real server-side ingest (default rights: devices
// may write the events channel only) until the test ends.
func (e *env) startIngest(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ingest.New(e.broker.IngestClient(t), ingest.Options{Log: quietLog()}).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ingest: %v", err)
		}
	})
}

// eventually waits with [fstest.Eventually] until cond returns true,
// failing the test with cond's last description after 15s.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last lastText
	fstest.Eventually(t, 15*time.Second, func() bool {
		ok, desc := cond()
		last = lastText(desc)
		return ok
	}, "%s; last: %s", what, &last)
}

// lastText is a description that a pointer formats when the message is
// printed, not when it is passed: a wait's last observation.
type lastText string

func (l *lastText) String() string { return string(*l) }

type conflictsResp struct {
	Conflicts []store.Conflict `json:"conflicts"`
	Count     int              `json:"count"`
}

// write posts body to /v1/records and requires a 202.
func (e *env) write(t *testing.T, body string) localapi.WriteResponse {
	t.Helper()
	var wr localapi.WriteResponse
	if resp := e.do(t, http.MethodPost, "/v1/records", body, &wr); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/records %s: status %d, want 202", body, resp.StatusCode)
	}
	if !strings.HasPrefix(wr.MutationID, "m") || len(wr.MutationID) < 2 || wr.State != store.StateQueued {
		t.Fatalf("POST /v1/records %s: %+v, want a mutation id m... in state queued", body, wr)
	}
	return wr
}

// record returns the live view's record id of channel ch, or nil.
func (e *env) record(t *testing.T, ch events.Channel, id string) *store.Record {
	t.Helper()
	var r recordsResp
	if resp := e.get(t, "/v1/records?channel="+string(ch), &r); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET records %s: %d", ch, resp.StatusCode)
	}
	for i := range r.Records {
		if r.Records[i].RecordID == id {
			return &r.Records[i]
		}
	}
	return nil
}

func (e *env) status(t *testing.T) agent.Status {
	t.Helper()
	var st agent.Status
	if resp := e.get(t, "/v1/status", &st); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/status: %d", resp.StatusCode)
	}
	return st
}

func (e *env) conflicts(t *testing.T) []store.Conflict {
	t.Helper()
	var cr conflictsResp
	if resp := e.get(t, "/v1/conflicts", &cr); resp.StatusCode != http.StatusOK || cr.Count != len(cr.Conflicts) {
		t.Fatalf("GET /v1/conflicts: %d, count %d for %d conflicts", resp.StatusCode, cr.Count, len(cr.Conflicts))
	}
	return cr.Conflicts
}

func TestHandler_Write_UpsertSyncs(t *testing.T) {
	e := startWriteEnv(t)
	wr := e.write(t, `{"org_unit":"north","channel":"events","kind":"event","id":"w-1","body":{"title":"written","n":2}}`)
	if wr.BaseVersion != 0 {
		t.Fatalf("new record based on version %d, want 0", wr.BaseVersion)
	}

	// Ingest is not running: the write is certainly still pending.
	r := e.record(t, events.ChannelEvents, "w-1")
	if r == nil || !r.Pending || r.OrgUnit != "north" || r.Kind != "event" || r.Body["title"] != "written" || r.Body["n"] != float64(2) {
		t.Fatalf("record right after the write: %+v, want it pending with the written body", r)
	}
	if srv := e.record(t, events.ChannelEvents, "srv-1"); srv == nil || srv.Pending {
		t.Fatalf("untouched server record: %+v, want it present and not pending", srv)
	}
	if st := e.status(t); st.PendingWrites != 1 || st.SyncErrors != 0 {
		t.Fatalf("status with one queued write: pending_writes %d, sync_errors %d", st.PendingWrites, st.SyncErrors)
	}

	e.startIngest(t)
	eventually(t, "write accepted", func() (bool, string) {
		r := e.record(t, events.ChannelEvents, "w-1")
		return r != nil && !r.Pending && r.Version > 0, fmtRecord(r)
	})
	r = e.record(t, events.ChannelEvents, "w-1")
	if r.Body["title"] != "written" || r.Origin != "tab-w" || r.Version <= e.versions["srv-1"] {
		t.Fatalf("accepted record %+v: want the written body from tab-w at a version after %d", r, e.versions["srv-1"])
	}
	st := e.status(t)
	if st.PendingWrites != 0 || st.SyncErrors != 0 {
		t.Fatalf("status after autosync: pending_writes %d, sync_errors %d, want 0, 0", st.PendingWrites, st.SyncErrors)
	}
	// The raw JSON carries pending_writes too.
	var raw map[string]any
	e.get(t, "/v1/status", &raw)
	if raw["pending_writes"] != float64(0) {
		t.Fatalf("raw status pending_writes = %v", raw["pending_writes"])
	}
	// The server really has it.
	ch := e.broker.DeviceChanges(t, "north")
	if len(ch) != 1 || ch[0].RecordID != "w-1" || ch[0].Origin.DeviceID != "tab-w" || ch[0].Origin.MutationID != wr.MutationID {
		t.Fatalf("device changes on the server: %+v, want w-1 from tab-w mutation %s", ch, wr.MutationID)
	}
}

func fmtRecord(r *store.Record) string {
	if r == nil {
		return "no record"
	}
	return fmt.Sprintf("%+v", *r)
}

func TestHandler_Write_Errors(t *testing.T) {
	e := startWriteEnv(t)
	deep := strings.Repeat(`{"n":`, events.MaxBodyDepth) + "{}" + strings.Repeat("}", events.MaxBodyDepth)
	big := `{"org_unit":"north","channel":"events","kind":"event","id":"x1","body":{"a":"` + strings.Repeat("x", events.MaxBodySize) + `"}}`
	e.wantError(t, http.MethodPost, "/v1/records", big, http.StatusRequestEntityTooLarge, "too_large")
	for _, tc := range []struct{ name, body, code string }{
		{"trailing object", `{"org_unit":"north","channel":"events","kind":"event","id":"x1","body":{"a":1}}{"id":"x2"}`, "bad_request"},
		{"body too deep", `{"org_unit":"north","channel":"events","kind":"event","id":"x1","body":` + deep + `}`, "bad_write"},
		{"unknown field", `{"org_unit":"north","channel":"events","kind":"event","id":"x1","body":{"a":1},"colour":"red"}`, "bad_request"},
		{"not JSON", `{"org_unit":`, "bad_request"},
		{"body not an object", `{"org_unit":"north","channel":"events","kind":"event","id":"x1","body":[1]}`, "bad_request"},
		{"org unit not the device's", `{"org_unit":"east","channel":"events","kind":"event","id":"x1","body":{"a":1}}`, "bad_write"},
		{"upsert without body", `{"org_unit":"north","channel":"events","kind":"event","id":"x1"}`, "bad_write"},
		{"explicit upsert, null body", `{"org_unit":"north","channel":"events","kind":"event","id":"x1","op":"upsert","body":null}`, "bad_write"},
		{"delete with body", `{"org_unit":"north","channel":"events","kind":"event","id":"x1","op":"delete","body":{"a":1}}`, "bad_write"},
		{"dotted id", `{"org_unit":"north","channel":"events","kind":"event","id":"a.b","body":{"a":1}}`, "bad_write"},
		{"unknown op", `{"org_unit":"north","channel":"events","kind":"event","id":"x1","op":"merge","body":{"a":1}}`, "bad_write"},
		{"bad kind", `{"org_unit":"north","channel":"events","kind":"a b","id":"x1","body":{"a":1}}`, "bad_write"},
		{"unknown channel", `{"org_unit":"north","channel":"gossip","kind":"event","id":"x1","body":{"a":1}}`, "bad_write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.wantError(t, http.MethodPost, "/v1/records", tc.body, http.StatusBadRequest, tc.code)
		})
	}
	// Nothing was queued or shown.
	if st := e.status(t); st.PendingWrites != 0 || st.SyncErrors != 0 {
		t.Fatalf("after refused writes: pending_writes %d, sync_errors %d", st.PendingWrites, st.SyncErrors)
	}
	var r recordsResp
	e.get(t, "/v1/records?channel=events", &r)
	if ids(r.Records) != "srv-1" {
		t.Fatalf("records after refused writes: %s, want srv-1 only", ids(r.Records))
	}
	// A valid delete (no body) is accepted: the check above is not a blanket refusal.
	e.write(t, `{"org_unit":"north","channel":"events","kind":"event","id":"srv-1","op":"delete"}`)
	if rec := e.record(t, events.ChannelEvents, "srv-1"); rec != nil {
		t.Fatalf("pending delete still shows the record: %+v", rec)
	}
}

func TestHandler_Write_RejectedThenUndo(t *testing.T) {
	e := startWriteEnv(t)
	e.startIngest(t)
	wr := e.write(t, `{"org_unit":"north","channel":"admin","kind":"setting","id":"set-1","body":{"k":"v"}}`)
	if r := e.record(t, events.ChannelAdmin, "set-1"); r == nil || r.Body["k"] != "v" {
		t.Fatalf("admin record right after the write: %+v, want the local change", r)
	}

	var cs []store.Conflict
	eventually(t, "write rejected", func() (bool, string) {
		cs = e.conflicts(t)
		return len(cs) == 1, fmt.Sprintf("conflicts: %+v", cs)
	})
	c := cs[0]
	if c.MutationID != wr.MutationID || c.State != store.StateRejected || c.Reason != events.ReasonNotAllowed || c.Message == "" ||
		c.OrgUnit != "north" || c.Channel != events.ChannelAdmin || c.Kind != "setting" || c.RecordID != "set-1" ||
		c.LocalOp != events.OpUpsert || c.LocalBody["k"] != "v" {
		t.Fatalf("sync error %+v, want the rejected (not_allowed) upsert %s of admin/setting/set-1", c, wr.MutationID)
	}
	if st := e.status(t); st.SyncErrors != 1 || st.PendingWrites != 0 {
		t.Fatalf("status: sync_errors %d, pending_writes %d, want 1, 0", st.SyncErrors, st.PendingWrites)
	}

	base := "/v1/conflicts/" + c.MutationID
	// A rejection cannot be retried, and an unknown action is refused the
	// same way (the mutation exists, the resolution does not apply).
	e.wantError(t, http.MethodPost, base+"/retry", "", http.StatusConflict, "cannot_resolve")
	e.wantError(t, http.MethodPost, base+"/undelete", "", http.StatusConflict, "cannot_resolve")
	e.wantError(t, http.MethodPost, base+"/explode", "", http.StatusConflict, "cannot_resolve")
	// An unknown id is not found, whatever the action.
	e.wantError(t, http.MethodPost, "/v1/conflicts/nope/undo", "", http.StatusNotFound, "not_found")
	e.wantError(t, http.MethodPost, "/v1/conflicts/nope/explode", "", http.StatusNotFound, "not_found")
	if cs := e.conflicts(t); len(cs) != 1 || cs[0].MutationID != c.MutationID {
		t.Fatalf("refused resolutions changed the conflicts: %+v", cs)
	}
	if r := e.record(t, events.ChannelAdmin, "set-1"); r == nil || !r.Pending {
		t.Fatalf("refused resolutions changed the local record: %+v", r)
	}

	var ok map[string]any
	if resp := e.do(t, http.MethodPost, base+"/undo", "", &ok); resp.StatusCode != http.StatusOK ||
		ok["resolved"] != c.MutationID || ok["action"] != "undo" {
		t.Fatalf("undo: %d %v, want 200 resolved %s", resp.StatusCode, ok, c.MutationID)
	}
	if _, has := ok["mutation_id"]; has {
		t.Fatalf("undo queued a new mutation: %v", ok)
	}
	if cs := e.conflicts(t); len(cs) != 0 {
		t.Fatalf("conflicts after undo: %+v", cs)
	}
	if r := e.record(t, events.ChannelAdmin, "set-1"); r != nil {
		t.Fatalf("admin record after undo: %+v, want it gone", r)
	}
	if st := e.status(t); st.SyncErrors != 0 || st.PendingWrites != 0 {
		t.Fatalf("status after undo: sync_errors %d, pending_writes %d", st.SyncErrors, st.PendingWrites)
	}
	// Settled: undoing again finds nothing.
	e.wantError(t, http.MethodPost, base+"/undo", "", http.StatusNotFound, "not_found")
}

func TestHandler_Write_ConflictThenRetry(t *testing.T) {
	e := startWriteEnv(t)
	e.startIngest(t)
	v1 := e.versions["srv-1"]
	if r := e.record(t, events.ChannelEvents, "srv-1"); r == nil || r.Version != v1 {
		t.Fatalf("srv-1 after the initial sync: %+v, want version %d", r, v1)
	}
	// The server changes the record; the agent does not download it (its
	// next delta sync is 30 minutes away), so the device's write is based
	// on the old version.
	v2 := e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "srv-1",
		map[string]any{"title": "T srv-1", "by": "server-2"}))
	wr := e.write(t, `{"org_unit":"north","channel":"events","kind":"event","id":"srv-1","body":{"title":"T srv-1","by":"device"}}`)
	if wr.BaseVersion != v1 || v2 <= v1 {
		t.Fatalf("write based on %d, want the old version %d (server is at %d)", wr.BaseVersion, v1, v2)
	}

	var cs []store.Conflict
	eventually(t, "write in conflict", func() (bool, string) {
		cs = e.conflicts(t)
		return len(cs) == 1, fmt.Sprintf("conflicts: %+v", cs)
	})
	c := cs[0]
	if c.MutationID != wr.MutationID || c.State != store.StateConflict || c.BaseVersion != v1 || c.ServerVersion != v2 ||
		c.ServerDeleted || c.ServerBody["by"] != "server-2" || c.LocalBody["by"] != "device" || c.Message == "" {
		t.Fatalf("conflict %+v, want base %d, server version %d with the server's body and the local body", c, v1, v2)
	}
	if st := e.status(t); st.SyncErrors != 1 || st.PendingWrites != 0 {
		t.Fatalf("status in conflict: sync_errors %d, pending_writes %d", st.SyncErrors, st.PendingWrites)
	}
	// The live view still shows the device's change.
	if r := e.record(t, events.ChannelEvents, "srv-1"); r == nil || !r.Pending || r.Body["by"] != "device" {
		t.Fatalf("record in conflict: %+v, want the device's pending change", r)
	}

	var ok map[string]any
	if resp := e.do(t, http.MethodPost, "/v1/conflicts/"+c.MutationID+"/retry", "", &ok); resp.StatusCode != http.StatusOK ||
		ok["resolved"] != c.MutationID || ok["action"] != "retry" {
		t.Fatalf("retry: %d %v", resp.StatusCode, ok)
	}
	newID, _ := ok["mutation_id"].(string)
	if !strings.HasPrefix(newID, "m") || newID == c.MutationID {
		t.Fatalf("retry answered mutation_id %q, want a new mutation", ok["mutation_id"])
	}

	eventually(t, "retry accepted", func() (bool, string) {
		r := e.record(t, events.ChannelEvents, "srv-1")
		return r != nil && !r.Pending && r.Version > v2, fmtRecord(r)
	})
	r := e.record(t, events.ChannelEvents, "srv-1")
	if r.Body["by"] != "device" || r.Origin != "tab-w" {
		t.Fatalf("record after retry: %+v, want the device's body", r)
	}
	if cs := e.conflicts(t); len(cs) != 0 {
		t.Fatalf("conflicts after retry: %+v", cs)
	}
	if st := e.status(t); st.SyncErrors != 0 || st.PendingWrites != 0 {
		t.Fatalf("status after retry: sync_errors %d, pending_writes %d", st.SyncErrors, st.PendingWrites)
	}
	// On the server, the retried mutation (not the conflicting one) landed on top of v2.
	ch := e.broker.DeviceChanges(t, "north")
	if len(ch) != 1 || ch[0].Origin.MutationID != newID || ch[0].Origin.BaseVersion != v2 {
		t.Fatalf("device changes on the server: %+v, want only %s based on %d", ch, newID, v2)
	}
}

func TestClient_WriteConflictsResolve(t *testing.T) {
	e := startWriteEnv(t)
	e.startIngest(t)
	ctx := ctxT(t)

	_, err := e.client.Write(ctx, agent.WriteRequest{OrgUnit: "east", Channel: "events", Kind: "event", RecordID: "c-1", Body: map[string]any{"a": 1}})
	if apiErr := asAPIError(err); apiErr == nil || apiErr.Status != http.StatusBadRequest || apiErr.Code != "bad_write" || apiErr.Message == "" {
		t.Fatalf("write to a foreign unit: %v, want a 400 bad_write APIError", err)
	}

	ok, err := e.client.Write(ctx, agent.WriteRequest{OrgUnit: "south", Channel: "events", Kind: "finding", RecordID: "c-1",
		Body: map[string]any{"title": "found"}})
	if err != nil || !strings.HasPrefix(ok.MutationID, "m") || ok.State != store.StateQueued || ok.BaseVersion != 0 {
		t.Fatalf("Write: %+v %v", ok, err)
	}
	bad, err := e.client.Write(ctx, agent.WriteRequest{OrgUnit: "south", Channel: "admin", Kind: "role_permission", RecordID: "rp-1",
		Body: map[string]any{"role": "admin"}})
	if err != nil || bad.MutationID == ok.MutationID {
		t.Fatalf("Write admin: %+v %v", bad, err)
	}

	var cs []store.Conflict
	eventually(t, "admin write rejected, event accepted", func() (bool, string) {
		var err error
		if cs, err = e.client.Conflicts(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := e.client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(cs) == 1 && st.PendingWrites == 0, fmt.Sprintf("conflicts %+v, pending writes %d", cs, st.PendingWrites)
	})
	if cs[0].MutationID != bad.MutationID || cs[0].State != store.StateRejected || cs[0].Reason != events.ReasonNotAllowed ||
		cs[0].RecordID != "rp-1" || cs[0].LocalBody["role"] != "admin" || cs[0].CreatedAt.IsZero() || cs[0].DecidedAt.IsZero() {
		t.Fatalf("Conflicts: %+v, want the rejected admin write %s", cs, bad.MutationID)
	}

	for _, tc := range []struct {
		id, action string
		status     int
		code       string
	}{
		{bad.MutationID, "retry", http.StatusConflict, "cannot_resolve"},
		{bad.MutationID, "explode", http.StatusConflict, "cannot_resolve"},
		{ok.MutationID, "undo", http.StatusNotFound, "not_found"}, // accepted: no sync error to resolve
		{"nope", "undo", http.StatusNotFound, "not_found"},
		{"has/slash", "undo", http.StatusNotFound, "not_found"}, // escaped by the client, still one path segment
	} {
		err := e.client.Resolve(ctx, tc.id, tc.action)
		if apiErr := asAPIError(err); apiErr == nil || apiErr.Status != tc.status || apiErr.Code != tc.code {
			t.Errorf("Resolve(%s, %s): %v, want %d %s", tc.id, tc.action, err, tc.status, tc.code)
		}
	}

	if err := e.client.Resolve(ctx, bad.MutationID, "undo"); err != nil {
		t.Fatalf("Resolve undo: %v", err)
	}
	if cs, err := e.client.Conflicts(ctx); err != nil || len(cs) != 0 || cs == nil {
		t.Fatalf("Conflicts after undo: %#v %v, want an empty (non-nil) list", cs, err)
	}
	recs, err := e.client.Records(ctx, store.Query{Channel: events.ChannelAdmin, Unit: store.AnyUnit})
	if err != nil || len(recs) != 0 {
		t.Fatalf("admin records after undo: %+v %v", recs, err)
	}
	recs, err = e.client.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: "south"})
	if err != nil || len(recs) != 1 || recs[0].RecordID != "c-1" || recs[0].Pending || recs[0].Version == 0 || recs[0].Body["title"] != "found" {
		t.Fatalf("south events: %+v %v, want the accepted c-1", recs, err)
	}
}

func asAPIError(err error) *localapi.APIError {
	var apiErr *localapi.APIError
	if errors.As(err, &apiErr) {
		return apiErr
	}
	return nil
}
