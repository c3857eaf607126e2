package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

// lines splits what o holds into lines (none while it is empty).
func lines(o *fstest.Output) []string {
	if o.String() == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(o.String(), "\n"), "\n")
}

// runTail runs `broker-embed tail` with args until want lines are out (or
// 15 s), then stops it as Ctrl-C would and returns its lines.
func runTail(t *testing.T, want int, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out fstest.Output
	root := newRoot()
	root.SetArgs(append([]string{"tail"}, args...))
	root.SetOut(&out)
	root.SetErr(&out)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	fstest.Eventually(t, 15*time.Second, func() bool { return len(lines(&out)) >= want }, "%d lines from tail %v", want, args)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail %v: %v", args, err)
	}
	return lines(&out)
}

func publishAt(t *testing.T, b *broker.Broker, kind, id string) uint64 {
	t.Helper()
	e := fstest.Change(t, "north", events.ChannelEvents, kind, id, map[string]any{"title": "T " + id, "n": 1})
	ack, err := b.Client().Publisher().Publish(context.Background(), e, natsjs.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ack.Version
}

// TestTailCmd_JSON: `tail --json` prints one JSON object per line that
// parses on its own, with the record, its version and body; --since starts
// at the first change at or after that time, and --kind narrows to one kind.
func TestTailCmd_JSON(t *testing.T) {
	b := startBroker(t)
	publishAt(t, b, "event", "before")
	time.Sleep(10 * time.Millisecond) // two distinct publish times around since, not synchronisation
	since := time.Now().UTC()
	time.Sleep(10 * time.Millisecond)
	v1 := publishAt(t, b, "event", "e1")
	publishAt(t, b, "finding", "f1")
	v3 := publishAt(t, b, "event", "e2")
	common := []string{"--org", "north", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--since", since.Format(time.RFC3339Nano), "--json"}

	lines := runTail(t, 3, common...)
	var got []tailLine
	for _, l := range lines {
		var tl tailLine
		if err := json.Unmarshal([]byte(l), &tl); err != nil {
			t.Fatalf("line %q does not parse: %v", l, err)
		}
		got = append(got, tl)
	}
	if len(got) != 3 || got[0].RecordID != "e1" || got[0].Version != v1 || got[1].Kind != "finding" || got[2].Version != v3 {
		t.Fatalf("tail --since printed %+v; want e1 (v%d), f1, e2 (v%d), not the change before", got, v1, v3)
	}
	if got[0].Op != "upsert" || got[0].Body["title"] != "T e1" || got[0].OrgUnit != "north" || got[0].Channel != "events" {
		t.Fatalf("first line %+v: want the record's op, body, unit and channel", got[0])
	}
	if _, err := time.Parse(time.RFC3339Nano, got[0].Time); err != nil {
		t.Fatalf("ts %q: %v", got[0].Time, err)
	}

	kinds := runTail(t, 2, append(common, "--channel", "events", "--kind", "event")...)
	if len(kinds) != 2 || !strings.Contains(kinds[0], `"record":"e1"`) || !strings.Contains(kinds[1], `"record":"e2"`) {
		t.Fatalf("tail --kind event printed %q, want e1 and e2 only", kinds)
	}
}

// TestTailCmd_Errors: bad flags are refused with a clear error.
func TestTailCmd_Errors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"tail", "--org", "north", "--since", "yesterday"}, "--since"},
		{[]string{"tail", "--org", "north", "--kind", "event"}, "kind needs its channel"},
		{[]string{"tail"}, "org"},
	} {
		out, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error()+out, c.want) {
			t.Errorf("%v: %v (%s), want an error naming %q", c.args, err, out, c.want)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{"": {}, "2h": now.Add(-2 * time.Hour), "2026-12-01T08:00:00Z": time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseSince("-2h", now); err == nil {
		t.Error("a negative duration was accepted")
	}
}
