package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

func content(object string, size int64) events.Content {
	return events.Content{Object: object, NUID: "N" + object[len(object)-1:], Size: size, Chunks: 1, Digest: "SHA-256=x"}
}

// TestDB_WantDocument walks one document through its rows: wanted,
// progress, done, wanted again at the same content (nothing to do), a new
// version (the old file kept until done), stale steps refused, dropped.
func TestDB_WantDocument(t *testing.T) {
	db := mustOpenDB(t)
	ctx, now := context.Background(), time.Now()
	v1, v2 := content("d1/a", 10), content("d1/b", 20)
	if q, err := db.WantDocument(ctx, "north", "d1", 5, v1, now); err != nil || !q {
		t.Fatalf("want v1: %v %v", q, err)
	}
	if q, _ := db.WantDocument(ctx, "north", "d1", 5, v1, now); q {
		t.Fatal("wanting what is already queued queued it again")
	}
	if err := db.DocProgress(ctx, "north", "d1", v1.Object, 4, 77, 1); err != nil {
		t.Fatal(err)
	}
	f, _ := db.DocFile(ctx, "north", "d1")
	if f.State != store.DocQueued || f.HasFile() || f.PartBytes != 4 || f.PartSeq != 77 || f.WantVersion != 5 {
		t.Fatalf("in progress: %+v", f)
	}
	if old, err := db.DocDone(ctx, "north", "d1", v1.Object, "d1.a", now); err != nil || old != "" {
		t.Fatalf("done: %q %v", old, err)
	}
	if q, _ := db.WantDocument(ctx, "north", "d1", 5, v1, now); q {
		t.Fatal("content on disk was queued again")
	}
	if q, err := db.WantDocument(ctx, "north", "d1", 9, v2, now); err != nil || !q {
		t.Fatalf("want v2: %v %v", q, err)
	}
	f, _ = db.DocFile(ctx, "north", "d1")
	if f.Path != "d1.a" || f.Version != 5 || f.Want.Object != v2.Object || f.PartBytes != 0 {
		t.Fatalf("update pending: %+v (the v1 file must stay named until v2 is done)", f)
	}
	if _, err := db.WantDocument(ctx, "north", "d2", 3, content("d2/a", 7), now); err != nil {
		t.Fatal(err)
	}
	if err := db.DocProgress(ctx, "north", "d2", "d2/a", 2, 1, 1); err != nil {
		t.Fatal(err)
	}
	if c, err := db.DocSummary(ctx); err != nil || c != (store.DocCounts{UpdatePending: 1, Downloading: 1, Bytes: 10 + 2}) {
		t.Fatalf("summary %+v, %v: want d1 update pending (10 bytes on disk), d2 downloading (2 bytes)", c, err)
	}
	if n, err := db.NextQueued(ctx); err != nil || n.RecordID != "d1" {
		t.Fatalf("next queued %+v, %v: want the older request, d1", n, err)
	}
	if _, err := db.DropDocument(ctx, "north", "d2"); err != nil {
		t.Fatal(err)
	}
	if err := db.DocProgress(ctx, "north", "d1", v1.Object, 1, 1, 1); !errors.Is(err, store.ErrStaleDownload) {
		t.Fatalf("progress of a download no longer wanted: %v", err)
	}
	if err := db.DocFailed(ctx, "north", "d1", v2.Object, "digest mismatch", now); err != nil {
		t.Fatal(err)
	}
	f, _ = db.DocFile(ctx, "north", "d1")
	if f.State != store.DocFailed || f.Error != "digest mismatch" || f.Path != "d1.a" {
		t.Fatalf("failed update: %+v", f)
	}
	if q, _ := db.WantDocument(ctx, "north", "d1", 9, v2, now); !q {
		t.Fatal("a failed download asked for again was not queued")
	}
	if old, err := db.DocDone(ctx, "north", "d1", v2.Object, "d1.b", now); err != nil || old != "d1.a" {
		t.Fatalf("done v2: old %q, %v; want d1.a to remove", old, err)
	}
	if _, err := db.DocDone(ctx, "north", "d1", v2.Object, "d1.b", now); !errors.Is(err, store.ErrStaleDownload) {
		t.Fatalf("done twice: %v", err)
	}
	if p, err := db.DropDocument(ctx, "north", "d1"); err != nil || p != "d1.b" {
		t.Fatalf("drop: %q %v", p, err)
	}
	if _, err := db.DocFile(ctx, "north", "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after drop: %v", err)
	}
}
