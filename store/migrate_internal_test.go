package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
)

// A device that has a completed staged download under schema 5 still
// applies it, with its position, after the upgrade to staging generations.
func TestDB_migrate_StagingGenerations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "device.db")
	raw, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for i, m := range Migrations()[:5] {
		if _, err := raw.Exec(m); err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
	}
	now := time.Now().UnixMilli()
	for _, q := range []string{`PRAGMA user_version = 5`,
		`INSERT INTO records_events VALUES ('north', 'event', 'a', 1, 'e1', '', 1, x'81a17601')`,
		`INSERT INTO checkpoints (org_unit, channel, last_seq, snapshot_done) VALUES ('north', 'events', 1, 1)`,
		`INSERT INTO staged VALUES ('events', 'north', 'event', 'a', 3, 2, 'e2', '', 2, 0, x'81a17602')`,
		`INSERT INTO staged_checkpoints (org_unit, channel, last_seq, snapshot_done) VALUES ('north', 'events', 2, 1)`,
		`INSERT INTO meta VALUES ('staging_gen', '3'), ('applied_gen', '2'), ('staging_ready_at', '` + fmt.Sprint(now) + `')`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()

	db, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if st, err := db.StagingState(ctx); err != nil || st.Changes != 1 || st.Ready == nil {
		t.Fatalf("staging after the upgrade %+v, %v; want 1 ready change", st, err)
	}
	if n, err := db.ApplyStaged(ctx, time.Now()); err != nil || n != 1 {
		t.Fatalf("apply after the upgrade: %d, %v", n, err)
	}
	cp, err := db.Checkpoint(ctx, "north", events.ChannelEvents)
	if err != nil || cp.LastSeq != 2 {
		t.Fatalf("checkpoint after apply %+v, %v; want 2", cp, err)
	}
	recs, err := db.Records(ctx, Query{Channel: events.ChannelEvents, Unit: "north"})
	if err != nil || len(recs) != 1 || recs[0].Version != 2 {
		t.Fatalf("records after apply %+v, %v; want a@2", recs, err)
	}
}
