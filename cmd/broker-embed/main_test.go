package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
)

// startBroker opens a real broker with units north and south.
func startBroker(t *testing.T) *broker.Broker {
	t.Helper()
	cfg := broker.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", OrgUnits: []string{"north", "south"}}
	cfg.NATS.Port = -1
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Close(ctx)
	})
	return b
}

// dataDir is the data dir of b, whose keys seed and publish sign their
// tool identity with.
func dataDir(b *broker.Broker) string { return filepath.Dir(b.Authority().Dir()) }

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func unitMsgs(t *testing.T, b *broker.Broker, unit string) uint64 {
	t.Helper()
	st, err := b.Client().UnitState(context.Background(), unit)
	if err != nil {
		t.Fatal(err)
	}
	return st.Msgs
}

var publishedRe = regexp.MustCompile(`^published (\S+) to (\S+): version (\d+)( \(duplicate\))?\n$`)

func TestPublishCmd_Run(t *testing.T) {
	b := startBroker(t)
	out, err := run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--channel", "events", "--kind", "event",
		"--id", "r1", "--body", `{"title":"Pump check","n":3,"ratio":0.5}`)
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	m := publishedRe.FindStringSubmatch(out)
	if m == nil || m[2] != "FS_ORG_north" || m[4] != "" {
		t.Fatalf("output %q, want the version on FS_ORG_north", out)
	}
	v, _ := strconv.ParseUint(m[3], 10, 64)
	st, err := b.Client().UnitState(context.Background(), "north")
	if err != nil || st.Msgs != 1 || st.LastSeq != v {
		t.Fatalf("stream %+v (%v), want one message at the printed version %d", st, err, v)
	}

	// The stored body is the JSON object, with integers kept as integers.
	js, err := jetstream.New(b.Client().Conn())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), "FS_ORG_north")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(context.Background(), "fs.org.north.events.event.r1")
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.Decode(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := msgpack.Unmarshal(e.Body, &body); err != nil {
		t.Fatal(err)
	}
	if e.EventID != m[1] || body["title"] != "Pump check" || body["ratio"] != 0.5 {
		t.Fatalf("stored %+v body %v", e, body)
	}
	if _, isFloat := body["n"].(float64); isFloat || body["n"] == nil {
		t.Fatalf("body n = %v (%T), want an integer", body["n"], body["n"])
	}

	// Same event id again: a duplicate at the same version.
	out, err = run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--channel", "events", "--kind", "event",
		"--id", "r1", "--event-id", m[1], "--body", `{"title":"Pump check","n":3,"ratio":0.5}`)
	if d := publishedRe.FindStringSubmatch(out); err != nil || d == nil || d[3] != m[3] || d[4] == "" {
		t.Fatalf("duplicate publish: %v %q", err, out)
	}

	// Delete at the current version, then a stale expected version fails.
	out, err = run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--channel", "events", "--kind", "event",
		"--id", "r1", "--op", "delete", "--expected-version", m[3])
	if err != nil || publishedRe.FindStringSubmatch(out) == nil {
		t.Fatalf("delete at version %s: %v %q", m[3], err, out)
	}
	_, err = run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--channel", "events", "--kind", "event",
		"--id", "r1", "--body", `{"title":"late"}`, "--expected-version", m[3])
	if err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("stale expected version: %v, want a conflict", err)
	}

	// Tenant-wide admin data (no --org).
	out, err = run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--channel", "admin", "--kind", "setting", "--id", "s1", "--body", `{"value":"30m"}`)
	if m := publishedRe.FindStringSubmatch(out); err != nil || m == nil || m[2] != events.TenantStream {
		t.Fatalf("tenant-wide publish: %v %q", err, out)
	}
	if n := unitMsgs(t, b, "north"); n != 2 {
		t.Fatalf("north holds %d messages, want 2 (upsert, delete)", n)
	}
}

func TestPublishCmd_Errors(t *testing.T) {
	b := startBroker(t)
	base := []string{"publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--channel", "events", "--kind", "event", "--id", "r1"}
	for _, body := range []string{`{"title":`, `not json`, `[1,2]`, `"text"`} {
		if out, err := run(t, append(base, "--body", body)...); err == nil || !strings.Contains(err.Error(), "--body") {
			t.Errorf("--body %s: %v %q, want a --body error", body, err, out)
		}
	}
	if _, err := run(t, append(base, "--id", "a.b", "--body", `{"t":1}`)...); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Errorf("dotted id: %v, want invalid", err)
	}
	if _, err := run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "east", "--channel", "events", "--kind", "event", "--id", "r1", "--body", `{"t":1}`); err == nil || !strings.Contains(err.Error(), "unknown_unit") {
		t.Errorf("unknown unit: %v, want unknown_unit", err)
	}
	if _, err := run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--kind", "event", "--id", "r1"); err == nil || !strings.Contains(err.Error(), "channel") {
		t.Errorf("missing --channel: %v", err)
	}
	if _, err := run(t, append(base[:1], "--url", "nats://127.0.0.1:1", "--channel", "events", "--kind", "event", "--id", "r1", "--body", `{"t":1}`)...); err == nil {
		t.Error("no error without a broker")
	}
	if n := unitMsgs(t, b, "north"); n != 0 {
		t.Fatalf("failed publishes stored %d messages", n)
	}
}

func TestSeedCmd_Run(t *testing.T) {
	b := startBroker(t)
	out, err := run(t, "seed", "--org", "north", "--events", "50", "--admin", "5", "--documents", "10", "--url", b.ClientURL(), "--data-dir", dataDir(b))
	if err != nil {
		t.Fatalf("seed: %v\n%s", err, out)
	}
	if !strings.HasPrefix(out, "seeded 65 records into org unit north") {
		t.Fatalf("seed output %q", out)
	}
	st, err := b.Client().UnitState(context.Background(), "north")
	if err != nil {
		t.Fatal(err)
	}
	if st.Msgs != 65 || st.Subjects != 65 {
		t.Fatalf("north stream %+v, want 65 messages on 65 subjects", st)
	}
	if n := unitMsgs(t, b, "south"); n != 0 {
		t.Fatalf("south got %d messages", n)
	}
	// Same seed again: the event ids repeat and the broker deduplicates them.
	if _, err := run(t, "seed", "--org", "north", "--events", "50", "--admin", "5", "--documents", "10", "--url", b.ClientURL(), "--data-dir", dataDir(b)); err != nil {
		t.Fatal(err)
	}
	if n := unitMsgs(t, b, "north"); n != 65 {
		t.Fatalf("reseeding with the same seed: %d messages, want 65", n)
	}
}

func TestSeedCmd_Errors(t *testing.T) {
	b := startBroker(t)
	if _, err := run(t, "seed", "--events", "1", "--url", b.ClientURL(), "--data-dir", dataDir(b)); err == nil || !strings.Contains(err.Error(), "org") {
		t.Errorf("seed without --org: %v", err)
	}
	if _, err := run(t, "seed", "--org", "a.b", "--events", "1", "--url", b.ClientURL(), "--data-dir", dataDir(b)); err == nil {
		t.Error("seed --org a.b: no error")
	}
	if _, err := run(t, "seed", "--org", "east", "--events", "3", "--url", b.ClientURL(), "--data-dir", dataDir(b)); err == nil {
		t.Error("seed into a unit without a stream: no error")
	}
}

func TestRunCmd_BadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(p, []byte("colour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "run", "--config", p); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("run with an unknown key: %v", err)
	}
}

func TestPublishCmd_BigInteger(t *testing.T) {
	b := startBroker(t)
	if out, err := run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--channel", "events", "--kind", "event",
		"--id", "big", "--body", `{"n":9007199254740993}`); err != nil {
		t.Fatalf("publish: %v %q", err, out)
	}
	js, err := jetstream.New(b.Client().Conn())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), "FS_ORG_north")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(context.Background(), "fs.org.north.events.event.big")
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.Decode(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := msgpack.Unmarshal(e.Body, &body); err != nil {
		t.Fatal(err)
	}
	if n, ok := body["n"].(int64); !ok || n != 9007199254740993 {
		t.Fatalf("body n = %v (%T), want int64 9007199254740993", body["n"], body["n"])
	}
}
