package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

func readReport(t *testing.T, path string) reportFile {
	t.Helper()
	var f reportFile
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return f
}

// TestRun: the example keeps the open events per unit from the feed with
// its own integration credentials, follows closes and deletes, and after
// a restart continues from where it stopped.
func TestRun(t *testing.T) {
	b := fstest.MustStartBroker(t, "north", "south")
	creds := fstest.MustIntegrationCreds(t, b.Auth, "openreport", "north", "south")
	dir := t.TempDir()
	out := filepath.Join(dir, "report.json")
	pub := func(unit, kind, id, status string) {
		body := map[string]any{"title": id, "status": status}
		if status == "" {
			body = nil // a delete
		}
		b.MustPublish(t, fstest.Change(t, unit, events.ChannelEvents, kind, id, body))
	}
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, b.URL(), creds, "openreport", []string{"north", "south"}, out, filepath.Join(dir, "dead.jsonl"))
		}()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}
	wantOpen := func(north, south int) {
		t.Helper()
		fstest.Eventually(t, 15*time.Second, func() bool {
			f := readReport(t, out)
			return f.OpenPerUnit["north"] == north && f.OpenPerUnit["south"] == south
		}, "report with %d open in north, %d in south; have %+v", north, south, readReport(t, out).OpenPerUnit)
	}
	pub("north", "event", "n1", "open")
	pub("north", "event", "n2", "open")
	pub("north", "event", "n3", "closed")
	pub("north", "action", "a1", "open") // not an event: not counted
	pub("south", "event", "s1", "open")
	stop := start()
	wantOpen(2, 1)
	pub("north", "event", "n1", "closed")
	pub("south", "event", "s1", "")
	wantOpen(1, 0)
	stop()

	pub("north", "event", "n4", "open") // while the integration is stopped
	stop = start()
	defer stop()
	wantOpen(2, 0)
	if v := readReport(t, out).Records["north"]["n4"].Version; v == 0 {
		t.Fatal("n4 reported without its version")
	}
}
