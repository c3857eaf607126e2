//go:build unix

package localapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// mustLoadRecords bulk-loads n events records of unit north into the
// store at path, as an initial sync would, and closes it.
func mustLoadRecords(t *testing.T, path string, n int) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ev := events.ChannelEvents
	if ok, err := db.BeginBulk(ctx, ev); err != nil || !ok {
		t.Fatalf("begin bulk: %v %v", ok, err)
	}
	body, err := msgpack.Marshal(map[string]any{"title": "a record", "status": "open", "site": "north-07"})
	if err != nil {
		t.Fatal(err)
	}
	const per = 5000
	for i := 0; i < n; i += per {
		b := store.Batch{Unit: "north", Channel: ev, Bulk: true, SnapshotDone: i+per >= n}
		for j := i; j < min(i+per, n); j++ {
			b.Changes = append(b.Changes, projections.Change{Seq: uint64(j + 1), EventID: "seed-" + strconv.Itoa(j), Body: body,
				Addr:      events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: fmt.Sprintf("r%09d", j)},
				UpdatedAt: 1_700_000_000_000 + int64(j)})
		}
		if _, err := db.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.EndBulk(ctx, ev); err != nil {
		t.Fatal(err)
	}
}

// cpuTime is the CPU time the process has used so far (user + system).
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// TestHandler_Stream_IdleClientsCostNoCPU: 20 status streams open on a
// device with many records (100,000, 10,000 under the race detector;
// FS_SSE_RECORDS sets another number, `make bench-sse` a million) cost the
// whole process, agent and broker included, under 5% of a core while
// nothing changes, and still get every change at once.
func TestHandler_Stream_IdleClientsCostNoCPU(t *testing.T) {
	def := 100_000
	if fstest.RaceEnabled {
		def = 10_000
	}
	records := envInt(t, "FS_SSE_RECORDS", def)
	window := 10 * time.Second
	if testing.Short() {
		window = 3 * time.Second
	}
	const clients, limit = 20, 0.05
	e := &env{broker: fstest.MustStartBroker(t, "north"), versions: map[string]uint64{}}
	cfg := agent.Config{DeviceID: "tab-sse", OrgUnits: []string{"north"}, BrokerURL: e.broker.URL(), DataDir: t.TempDir(),
		APIAddr: "127.0.0.1:0", StallTimeout: 5 * time.Second}
	loaded := time.Now()
	mustLoadRecords(t, cfg.WithDefaults().DBPath(), records)
	t.Logf("%d records loaded in %v", records, time.Since(loaded).Round(time.Millisecond))
	e.run(t, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams := make([]<-chan string, clients)
	for i := range streams {
		streams[i] = e.mustOpenStream(t, ctx, e.base)
		if st, _ := nextStatusEvent(t, streams[i], 10*time.Second); st.Channels[0].Records != records {
			t.Fatalf("stream %d: first status counts %d events records, want %d", i, st.Channels[0].Records, records)
		}
	}

	cpu0, wall0 := cpuTime(t), time.Now()
	time.Sleep(window) // the measurement window: nothing is waited for
	cpu, wall := cpuTime(t)-cpu0, time.Since(wall0)
	share := cpu.Seconds() / wall.Seconds()
	t.Logf("%d idle status streams on %d records: process CPU %v over %v = %.2f%% of a core (limit %.0f%%)",
		clients, records, cpu.Round(time.Millisecond), wall.Round(time.Millisecond), 100*share, 100*limit)
	if share >= limit {
		t.Fatalf("idle streams used %.2f%% of a core, limit %.0f%%", 100*share, 100*limit)
	}

	// The streams are alive: a local write reaches each of them at once.
	var w map[string]any
	if resp := e.do(t, http.MethodPost, "/v1/records", `{"org_unit":"north","channel":"events","kind":"event","id":"new","body":{"a":1}}`, &w); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/records: %d %v", resp.StatusCode, w)
	}
	for _, lines := range streams {
		for st, _ := nextStatusEvent(t, lines, 15*time.Second); st.Channels[0].Records != records+1 || st.PendingWrites != 1; {
			st, _ = nextStatusEvent(t, lines, 15*time.Second)
		}
	}
}

// countingBackend counts the status reads of the agent it serves.
type countingBackend struct {
	*agent.Agent
	reads atomic.Int64
}

func (b *countingBackend) Status(ctx context.Context) (agent.Status, error) {
	b.reads.Add(1)
	return b.Agent.Status(ctx)
}

// TestHandler_Stream_ClientsShareOneStatusRead: however many streams are
// open, a change makes the status be read about once, not once per
// stream, and every stream gets it.
func TestHandler_Stream_ClientsShareOneStatusRead(t *testing.T) {
	const clients, limit = 20, 4
	e := startLifecycleEnv(t, nil, 0)
	b := &countingBackend{Agent: e.agent}
	srv := httptest.NewServer(localapi.Handler(b, localapi.Options{Token: e.token, Log: quietLog()}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams := make([]<-chan string, clients)
	for i := range streams {
		streams[i] = e.mustOpenStream(t, ctx, srv.URL)
		nextStatusEvent(t, streams[i], 10*time.Second)
	}
	before := b.reads.Load()
	var w map[string]any
	if resp := e.do(t, http.MethodPost, "/v1/records", `{"org_unit":"north","channel":"events","kind":"event","id":"shared","body":{"a":1}}`, &w); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/records: %d %v", resp.StatusCode, w)
	}
	for _, lines := range streams {
		for st, _ := nextStatusEvent(t, lines, 15*time.Second); st.PendingWrites != 1; {
			st, _ = nextStatusEvent(t, lines, 15*time.Second)
		}
	}
	reads := b.reads.Load() - before
	t.Logf("%d streams got a local write after %d status reads (limit %d)", clients, reads, limit)
	if reads > limit {
		t.Fatalf("%d streams read the status %d times for one write, want them to share a read (at most %d)", clients, reads, limit)
	}
}

// TestHandler_Stream_WriteOutcomes: a stream announces each local write's
// outcome as an "event: write" once the agent committed it (accepted with
// the record's version, or a conflict), so the app needs no polling; a
// read right after the event shows the same.
func TestHandler_Stream_WriteOutcomes(t *testing.T) {
	e := startLifecycleEnv(t, nil, 0)
	e.waitUpToDate(t, nil)
	runIngest(t, e.broker)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := e.mustOpenStream(t, ctx, e.base)
	nextStatusEvent(t, lines, 10*time.Second) // the stream is open: what follows is announced on it

	var w localapi.WriteResponse
	if r := e.do(t, http.MethodPost, "/v1/records", `{"org_unit":"north","channel":"events","kind":"event","id":"out-1","body":{"a":1}}`, &w); r.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/records: %d", r.StatusCode)
	}
	out := nextWriteEvent(t, lines, 15*time.Second)
	if out.MutationID != w.MutationID || out.State != store.StateAccepted || out.RecordID != "out-1" || out.OrgUnit != "north" ||
		out.Channel != "events" || out.Version == 0 || out.Seq == 0 {
		t.Fatalf("write event %+v, want mutation %s accepted with a version", out, w.MutationID)
	}
	var page localapi.RecordsPage
	e.do(t, http.MethodGet, "/v1/records?channel=events&unit=north&id=out-1", "", &page)
	if recs := page.Records; len(recs) != 1 || recs[0].Pending || recs[0].Version != out.Version {
		t.Fatalf("after the event GET shows %+v, want out-1 confirmed at version %d", page.Records, out.Version)
	}

	// A write based on a version the server moved past comes back as a conflict.
	e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "srv-1", map[string]any{"title": "server edit"}))
	if r := e.do(t, http.MethodPost, "/v1/records", `{"org_unit":"north","channel":"events","kind":"event","id":"srv-1","body":{"a":2}}`, &w); r.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/records: %d", r.StatusCode)
	}
	if out = nextWriteEvent(t, lines, 15*time.Second); out.MutationID != w.MutationID || out.State != store.StateConflict || out.Seq < 2 {
		t.Fatalf("write event %+v, want mutation %s as a conflict", out, w.MutationID)
	}
}

// nextWriteEvent reads events until an "event: write" and returns its
// outcome.
func nextWriteEvent(t *testing.T, lines <-chan string, timeout time.Duration) agent.WriteOutcome {
	t.Helper()
	deadline := time.After(timeout)
	for isWrite := false; ; {
		var l string
		select {
		case l = <-lines:
		case <-deadline:
			t.Fatal("no write event in time")
		}
		switch {
		case l == "event: write":
			isWrite = true
		case isWrite && strings.HasPrefix(l, "data: "):
			var out agent.WriteOutcome
			if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "data: ")), &out); err != nil {
				t.Fatalf("write event data %q: %v", l, err)
			}
			return out
		case l == "":
			isWrite = false
		}
	}
}
