package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

func TestDB_WipeConfirmed(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	mustApply(t, db, batch("north", ev, []projections.Change{upsertAt(t, 1, "north", ev, "event", "a", map[string]any{"v": 1})}))
	for k, v := range map[string]string{store.SettingPrefix + "refresh_mode": "off", "kept": "1", "progress": "x"} {
		if err := db.SetMeta(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.LocalWrite(ctx, store.Write{Addr: events.Address{OrgUnit: "north", Channel: ev, Kind: "event", RecordID: "w"},
		Op: events.OpUpsert, Body: mustBody(t, map[string]any{"w": 1})}, "m1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.WipeConfirmed(ctx, "kept"); !errors.Is(err, store.ErrUnconfirmed) {
		t.Fatalf("wipe with a queued write: %v, want ErrUnconfirmed", err)
	}
	if n := mustCount(t, db, store.Query{Channel: ev, Unit: "north"}); n != 2 {
		t.Fatalf("a refused wipe left %d records, want both", n)
	}
	if c, _ := db.OutboxCounts(ctx); c[store.StateQueued] != 1 {
		t.Fatalf("a refused wipe left the outbox %v", c)
	}

	_, err := db.ApplyResults(ctx, store.ResultsBatch{LastSeq: 1, Now: time.Now(), Results: []*events.Result{
		{DeviceID: "tab1", MutationID: "m1", Status: events.Accepted, Version: 2, At: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := db.WipeConfirmed(ctx, "kept")
	if err != nil || r.Records != 2 || r.Unsent != 0 {
		t.Fatalf("wipe = %+v, %v; want 2 records, nothing unsent", r, err)
	}
	if n := mustCount(t, db, store.Query{Channel: ev, Unit: "north"}); n != 0 {
		t.Fatalf("%d records after the wipe", n)
	}
	for k, want := range map[string]string{store.SettingPrefix + "refresh_mode": "off", "kept": "1", "progress": ""} {
		if v, err := db.Meta(ctx, k); err != nil || v != want {
			t.Errorf("meta %s = %q, %v after the wipe; want %q", k, v, err, want)
		}
	}
}
