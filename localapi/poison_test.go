package localapi_test

import (
	"database/sql"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// TestHandler_Records_PoisonedChannel: a change whose body is a msgpack
// map by its first byte only (integer keys), accepted by an older broker,
// reaches the device as a bad message, and a record an older agent stored
// with such a body is left out: GET /v1/records lists the channel's other
// records either way, and bad_messages counts both.
func TestHandler_Records_PoisonedChannel(t *testing.T) {
	e := &env{broker: fstest.MustStartBroker(t, "north"), versions: map[string]uint64{}}
	good := func(id string) {
		e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"title": "T " + id}))
	}
	good("n-ev-1")
	good("n-ev-2")
	poison, err := msgpack.Marshal(map[string]any{"id": "ev-poison", "org": "north", "ch": "events", "kind": "event",
		"rid": "p-1", "op": "upsert", "v": events.SchemaVersion, "ts": time.Now().UnixNano(),
		"body": msgpack.RawMessage{0x81, 0x01, 0xa1, 'x'}}) // {1: "x"}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.broker.Client.Conn().Request("fs.org.north.events.event.p-1", poison, 5*time.Second); err != nil {
		t.Fatalf("publish the old broker's poison change: %v", err)
	}
	good("n-ev-3")

	cfg := agent.Config{RefreshMode: blockingMode(), DeviceID: "tab-1", User: "alice", OrgUnits: []string{"north"}, BrokerURL: e.broker.URL(),
		DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", StallTimeout: 5 * time.Second}
	e.run(t, cfg)
	wantListed := func(t *testing.T, want string) {
		t.Helper()
		var r recordsResp
		if resp := e.get(t, "/v1/records?channel=events", &r); resp.StatusCode != http.StatusOK || ids(r.Records) != want || r.Count != 3 {
			t.Fatalf("GET /v1/records?channel=events: %d %s (count %d), want 200 %s", resp.StatusCode, ids(r.Records), r.Count, want)
		}
	}
	wantListed(t, "n-ev-1,n-ev-2,n-ev-3")
	if st := e.status(t); st.BadMessages != 1 {
		t.Fatalf("bad_messages = %d after the poison change, want 1", st.BadMessages)
	}

	// A record an older agent stored with such a body, as it stored it.
	raw, err := sql.Open("sqlite", "file:"+filepath.ToSlash(cfg.DBPath())+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`INSERT INTO records_events (org_unit, kind, record_id, version, event_id, updated_at, body)
		VALUES ('north', 'event', 'n-ev-0', 99, 'ev-old', 1, ?)`, []byte{0x81, 0xa1, 'e', 0xd4, 0x05, 0x00}); err != nil {
		t.Fatal(err)
	}
	wantListed(t, "n-ev-1,n-ev-2,n-ev-3")
	if st := e.status(t); st.BadMessages != 2 {
		t.Fatalf("bad_messages = %d with an unreadable stored record, want 2", st.BadMessages)
	}
	// The unreadable record sorts first: a page of one is still full.
	var one recordsResp
	if resp := e.get(t, "/v1/records?channel=events&limit=1", &one); resp.StatusCode != http.StatusOK || ids(one.Records) != "n-ev-1" {
		t.Fatalf("first page of one: %d %s, want 200 n-ev-1", resp.StatusCode, ids(one.Records))
	}
}
