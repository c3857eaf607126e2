package agent

import (
	"context"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

// startIngest runs the server-side ingest against b until the test ends.
func startIngest(t *testing.T, b *fstest.Broker, rights ingest.Rights) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ingest.New(b.IngestClient(t), ingest.Options{Rights: rights}).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ingest: %v", err)
		}
	})
}

// settle uploads and applies results until no write is pending.
func settle(t *testing.T, s *Syncer) {
	t.Helper()
	ctx := context.Background()
	var c map[string]int
	fstest.Eventually(t, 30*time.Second, func() bool {
		if _, err := s.Upload(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Results(ctx); err != nil {
			t.Fatal(err)
		}
		var err error
		if c, err = s.db.OutboxCounts(ctx); err != nil {
			t.Fatal(err)
		}
		return c[store.StateQueued]+c[store.StateSent] == 0
	}, "writes to be settled; still pending %v", &c)
}

func mustWrite(t *testing.T, s *Syncer, unit, kind, id string, body map[string]any) store.Mutation {
	t.Helper()
	r := WriteRequest{OrgUnit: unit, Channel: string(events.ChannelEvents), Kind: kind, RecordID: id, Body: body}
	if body == nil {
		r.Op = string(events.OpDelete)
	}
	m, err := s.Write(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// deviceChanges returns the device-made changes in unit's stream.
func deviceChanges(t *testing.T, b *fstest.Broker, unit string) []*events.Envelope {
	return b.DeviceChanges(t, unit)
}

// freshView syncs a new device of units from scratch and returns what the
// server holds, as that device sees it.
func freshView(t *testing.T, b *fstest.Broker, units ...string) serverModel {
	t.Helper()
	db := mustOpenDB(t)
	if _, err := NewSyncer(testConfig("observer", units...), deviceClient(t, b, testConfig("observer", units...)), db, nil).Sync(context.Background(), ScopeFull); err != nil {
		t.Fatal(err)
	}
	return liveServerView(t, db)
}
