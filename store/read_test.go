package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// seedRecords fills the admin channel with tenant-wide and unit records and
// the events channel with two units' records.
func seedRecords(tb testing.TB, db *store.DB) {
	tb.Helper()
	adm := events.ChannelAdmin
	mustApply(tb, db, batch("", adm, []projections.Change{
		upsertAt(tb, 1, "", adm, "setting", "s-b", map[string]any{"name": "tenant b"}),
		upsertAt(tb, 2, "", adm, "setting", "s-a", map[string]any{"name": "tenant a"}),
		upsertAt(tb, 3, "", adm, "role_permission", "p1", map[string]any{"name": "perm"}),
	}))
	mustApply(tb, db, batch("north", adm, []projections.Change{
		upsertAt(tb, 4, "north", adm, "setting", "s-n", map[string]any{"name": "north"}),
		upsertAt(tb, 5, "north", adm, "location", "l1", map[string]any{"name": "site", "floors": 3, "tags": []any{"x", "y"}}),
	}))
	mustApply(tb, db, batch("south", adm, []projections.Change{
		upsertAt(tb, 6, "south", adm, "setting", "s-s", map[string]any{"name": "south"}),
	}))
	var north []projections.Change
	for i := 0; i < 5; i++ {
		north = append(north, upsertAt(tb, uint64(10+i), "north", ev, "event", fmt.Sprintf("e%d", 4-i), map[string]any{"i": i}))
	}
	mustApply(tb, db, batch("north", ev, north))
}

func keys(recs []store.Record) string {
	var s []string
	for _, r := range recs {
		s = append(s, r.OrgUnit+"/"+r.Kind+"/"+r.RecordID)
	}
	return strings.Join(s, " ")
}

func TestDB_Records(t *testing.T) {
	db := mustOpenDB(t)
	seedRecords(t, db)
	adm := events.ChannelAdmin

	cases := []struct {
		name string
		q    store.Query
		want string
	}{
		{"any unit", store.Query{Channel: adm, Unit: store.AnyUnit},
			"/role_permission/p1 /setting/s-a /setting/s-b north/location/l1 north/setting/s-n south/setting/s-s"},
		{"tenant only", store.Query{Channel: adm, Unit: ""}, "/role_permission/p1 /setting/s-a /setting/s-b"},
		{"one unit", store.Query{Channel: adm, Unit: "north"}, "north/location/l1 north/setting/s-n"},
		{"kind any unit", store.Query{Channel: adm, Unit: store.AnyUnit, Kind: "setting"},
			"/setting/s-a /setting/s-b north/setting/s-n south/setting/s-s"},
		{"kind tenant", store.Query{Channel: adm, Unit: "", Kind: "setting"}, "/setting/s-a /setting/s-b"},
		{"kind and unit", store.Query{Channel: adm, Unit: "south", Kind: "setting"}, "south/setting/s-s"},
		{"kind absent in unit", store.Query{Channel: adm, Unit: "south", Kind: "location"}, ""},
		{"unknown unit", store.Query{Channel: adm, Unit: "west"}, ""},
		{"limit", store.Query{Channel: adm, Unit: store.AnyUnit, Limit: 2}, "/role_permission/p1 /setting/s-a"},
		{"limit offset", store.Query{Channel: adm, Unit: store.AnyUnit, Limit: 2, Offset: 2}, "/setting/s-b north/location/l1"},
		{"offset past end", store.Query{Channel: adm, Unit: store.AnyUnit, Offset: 6}, ""},
		{"ordered by id not by version", store.Query{Channel: ev, Unit: "north", Kind: "event"},
			"north/event/e0 north/event/e1 north/event/e2 north/event/e3 north/event/e4"},
		{"empty channel", store.Query{Channel: events.ChannelDocuments, Unit: store.AnyUnit}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			recs := mustRecords(t, db, tc.q)
			if got := keys(recs); got != tc.want {
				t.Fatalf("Records:\n got %q\nwant %q", got, tc.want)
			}
			if recs == nil {
				t.Fatal("Records returned nil, want an empty slice")
			}
			q := tc.q
			q.Limit, q.Offset = 0, 0
			if n := mustCount(t, db, q); n != len(mustRecords(t, db, q)) {
				t.Fatalf("Count = %d, Records without limit = %d", n, len(mustRecords(t, db, q)))
			}
		})
	}
}

func TestDB_Records_DecodesBody(t *testing.T) {
	db := mustOpenDB(t)
	seedRecords(t, db)
	recs := mustRecords(t, db, store.Query{Channel: events.ChannelAdmin, Unit: "north", Kind: "location"})
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	if r.Channel != events.ChannelAdmin || r.OrgUnit != "north" || r.Kind != "location" || r.RecordID != "l1" {
		t.Fatalf("address %+v", r)
	}
	if r.Version != 5 || r.EventID != "ev-l1-5" {
		t.Fatalf("version %d event %q", r.Version, r.EventID)
	}
	if want := time.UnixMilli(1_700_000_000_005).UTC(); !r.UpdatedAt.Equal(want) {
		t.Fatalf("UpdatedAt %v, want %v", r.UpdatedAt, want)
	}
	if r.Body["name"] != "site" || fmt.Sprint(r.Body["floors"]) != "3" || fmt.Sprint(r.Body["tags"]) != "[x y]" {
		t.Fatalf("body %#v", r.Body)
	}

	// RawBody is exactly the bytes applied.
	c := upsertAt(t, 1, "west", events.ChannelDocuments, "document", "d1", map[string]any{"title": "doc"})
	mustApply(t, db, batch("west", events.ChannelDocuments, []projections.Change{c}))
	d := mustRecords(t, db, store.Query{Channel: events.ChannelDocuments, Unit: "west"})
	if len(d) != 1 || string(d[0].RawBody) != string(c.Body) || d[0].Body["title"] != "doc" {
		t.Fatalf("document = %+v, want the applied body", d)
	}
}

func TestDB_Records_LimitDefaultsAndCaps(t *testing.T) {
	db := mustOpenDB(t)
	b := batch("north", ev, snapshotChanges(t, 130))
	mustApply(t, db, b)
	if got := len(mustRecords(t, db, store.Query{Channel: ev, Unit: store.AnyUnit})); got != 100 {
		t.Fatalf("default limit returned %d, want 100", got)
	}
	if got := len(mustRecords(t, db, store.Query{Channel: ev, Unit: store.AnyUnit, Limit: 1 << 20})); got != 130 {
		t.Fatalf("large limit returned %d, want 130", got)
	}
	if got := mustCount(t, db, store.Query{Channel: ev, Unit: store.AnyUnit, Limit: 5}); got != 130 {
		t.Fatalf("Count honoured Limit: %d", got)
	}
}

func TestDB_Records_BadQuery(t *testing.T) {
	db := mustOpenDB(t)
	ctx := context.Background()
	for _, q := range []store.Query{
		{Channel: "gossip", Unit: store.AnyUnit},
		{Channel: "", Unit: store.AnyUnit},
		{Channel: events.ChannelAdmin, Unit: store.AnyUnit, Kind: "a.b"},
		{Channel: events.ChannelDocuments, Unit: "north", Kind: "space ship"},
	} {
		if _, err := db.Records(ctx, q); !errors.Is(err, store.ErrBadQuery) {
			t.Errorf("Records(%+v) error = %v, want ErrBadQuery", q, err)
		}
		if _, err := db.Count(ctx, q); !errors.Is(err, store.ErrBadQuery) {
			t.Errorf("Count(%+v) error = %v, want ErrBadQuery", q, err)
		}
	}
}

func TestDB_Meta(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "device.db")
	db := mustOpenPath(t, path)
	if v, err := db.Meta(ctx, "device_id"); err != nil || v != "" {
		t.Fatalf("unset meta = %q, %v", v, err)
	}
	if err := db.SetMeta(ctx, "device_id", "tab-1"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetMeta(ctx, "other", "x"); err != nil {
		t.Fatal(err)
	}
	if v, err := db.Meta(ctx, "device_id"); err != nil || v != "tab-1" {
		t.Fatalf("meta = %q, %v; want tab-1", v, err)
	}
	if err := db.SetMeta(ctx, "device_id", "tab-2"); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Meta(ctx, "device_id"); v != "tab-2" {
		t.Fatalf("overwritten meta = %q, want tab-2", v)
	}
	if v, _ := db.Meta(ctx, "other"); v != "x" {
		t.Fatalf("unrelated key = %q, want x", v)
	}
	db.Close()
	db2 := mustOpenPath(t, path)
	if v, _ := db2.Meta(ctx, "device_id"); v != "tab-2" {
		t.Fatalf("meta after reopen = %q, want tab-2", v)
	}
}

func TestOpen_RefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "device.db")
	db := mustOpenPath(t, path)
	db.Close()

	raw := mustRawDB(t, path)
	if _, err := raw.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db, err := store.Open(ctx, path, store.Options{})
	if err == nil {
		db.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), "99") {
		t.Fatalf("error %q does not say the schema (99) is newer", err)
	}
}

func userVersion(tb testing.TB, path string) int {
	tb.Helper()
	raw := mustRawDB(tb, path)
	defer raw.Close()
	var v int
	if err := raw.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		tb.Fatal(err)
	}
	return v
}

func TestOpen_TwiceMigratesOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "dir", "device.db") // Open creates the directory
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if db.Path() != path {
		t.Fatalf("Path() = %q, want %q", db.Path(), path)
	}
	mustApply(t, db, batch("north", ev, snapshotChanges(t, 3)))
	if err := db.SetMeta(ctx, "device_id", "tab-1"); err != nil {
		t.Fatal(err)
	}
	migrated := userVersion(t, path)
	if migrated < 1 {
		t.Fatalf("user_version %d after the first Open", migrated)
	}

	// A second handle while the first is open, then a reopen after close.
	// Re-running a migration would fail (CREATE TABLE of an existing table)
	// or wipe data.
	db2 := mustOpenPath(t, path)
	if n := mustCount(t, db2, store.Query{Channel: ev, Unit: store.AnyUnit}); n != 3 {
		t.Fatalf("second handle sees %d rows, want 3", n)
	}
	db2.Close()
	db.Close()
	db3 := mustOpenPath(t, path)
	if n := mustCount(t, db3, store.Query{Channel: ev, Unit: store.AnyUnit}); n != 3 {
		t.Fatalf("reopened db has %d rows, want 3", n)
	}
	if v, _ := db3.Meta(ctx, "device_id"); v != "tab-1" {
		t.Fatalf("meta lost: %q", v)
	}
	if cp := mustCheckpoint(t, db3, "north", ev); cp.LastSeq != 3 || cp.Applied != 3 {
		t.Fatalf("checkpoint lost: %+v", cp)
	}
	db3.Close()
	if v := userVersion(t, path); v != migrated {
		t.Fatalf("user_version %d after three opens, want %d", v, migrated)
	}
}

func TestDB_ConcurrentReadersAndWriter(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	const batches, perBatch, readers = 40, 25, 4

	var work []store.Batch
	for i := 0; i < batches; i++ {
		var cs []projections.Change
		for j := 0; j < perBatch; j++ {
			seq := uint64(i*perBatch + j + 1)
			cs = append(cs, upsertAt(t, seq, "north", ev, "event", fmt.Sprintf("r%05d", seq), map[string]any{"seq": seq}))
		}
		work = append(work, batch("north", ev, cs))
	}

	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(done)
		for i, b := range work {
			if _, err := db.Apply(ctx, b); err != nil {
				errc <- fmt.Errorf("writer batch %d: %w", i, err)
				return
			}
		}
	}()
	readErrs := make(chan error, readers)
	for r := 0; r < readers; r++ {
		go func() {
			last, lastSeq, reads := 0, uint64(0), 0
			for {
				select {
				case <-done:
					if reads == 0 {
						readErrs <- errors.New("reader never read")
						return
					}
					readErrs <- nil
					return
				default:
				}
				// The checkpoint commits with the data: read it first, then
				// the rows must include at least what it covers.
				cp, err := db.Checkpoint(ctx, "north", ev)
				if err != nil {
					readErrs <- err
					return
				}
				n, err := db.Count(ctx, store.Query{Channel: ev, Unit: store.AnyUnit})
				if err != nil {
					readErrs <- err
					return
				}
				if _, err := db.Records(ctx, store.Query{Channel: ev, Unit: "north", Kind: "event", Limit: 50, Offset: n / 2}); err != nil {
					readErrs <- err
					return
				}
				switch {
				case n < last:
					readErrs <- fmt.Errorf("count went back from %d to %d", last, n)
					return
				case cp.LastSeq < lastSeq:
					readErrs <- fmt.Errorf("checkpoint went back from %d to %d", lastSeq, cp.LastSeq)
					return
				case uint64(n) < cp.LastSeq:
					readErrs <- fmt.Errorf("checkpoint %d ahead of the %d rows", cp.LastSeq, n)
					return
				}
				last, lastSeq = n, cp.LastSeq
				reads++
			}
		}()
	}
	for r := 0; r < readers; r++ {
		if err := <-readErrs; err != nil {
			t.Error(err)
		}
	}
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if n := mustCount(t, db, store.Query{Channel: ev, Unit: store.AnyUnit}); n != batches*perBatch {
		t.Fatalf("%d rows, want %d", n, batches*perBatch)
	}
}

// TestDB_Records_SkipsUnreadableBodies: records an older build stored
// with bodies that are msgpack maps by their first byte only (integer
// keys, extension types, NaN...) are left out of the listing, logged once
// and counted; every other record of the channel is listed.
func TestDB_Records_SkipsUnreadableBodies(t *testing.T) {
	var logged fstest.Output
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "device.db"),
		store.Options{Log: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	seedRecords(t, db)
	poison := map[string][]byte{
		"p-intkey": {0x81, 0x01, 0xa1, 'x'},                               // {1: "x"}
		"p-nested": {0x81, 0xa1, 'm', 0x81, 0x07, 0x01},                   // {"m": {7: 1}}
		"p-ext":    {0x81, 0xa1, 'e', 0xd4, 0x05, 0x00},                   // {"e": ext 5}
		"p-nan":    {0x81, 0xa1, 'f', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1}, // {"f": NaN}
		"p-trunc":  {0x82, 0xa1, 'a', 0x01},                               // a map of 2 with one entry
	}
	poison["a-first"] = poison["p-ext"] // sorts before every readable record
	var changes []projections.Change
	seq := uint64(100)
	for id, body := range poison {
		c := upsertAt(t, seq, "north", ev, "event", id, nil)
		c.Body = body
		changes, seq = append(changes, c), seq+1
	}
	mustApply(t, db, batch("north", ev, changes))
	// And a local write an older agent queued with such a body.
	if _, err := db.LocalWrite(context.Background(), store.Write{Addr: events.Address{OrgUnit: "north", Channel: ev, Kind: "event",
		RecordID: "p-local"}, Op: events.OpUpsert, Body: poison["p-intkey"]}, "m-old", time.Now()); err != nil {
		t.Fatal(err)
	}

	q := store.Query{Channel: ev, Unit: store.AnyUnit}
	for round := 0; round < 2; round++ {
		recs := mustRecords(t, db, q)
		if got, want := keys(recs), "north/event/e0 north/event/e1 north/event/e2 north/event/e3 north/event/e4"; got != want {
			t.Fatalf("round %d: listed %q, want the readable records %q", round, got, want)
		}
		if _, err := json.Marshal(recs); err != nil {
			t.Fatalf("listing does not encode as JSON: %v", err)
		}
	}
	if n := db.UnreadableRecords(); n != len(poison)+1 {
		t.Fatalf("UnreadableRecords = %d, want %d", n, len(poison)+1)
	}
	for id := range poison {
		if n := strings.Count(logged.String(), "id="+id+" "); n != 1 {
			t.Errorf("record %s logged %d times over two listings, want once:\n%s", id, n, logged.String())
		}
	}
	if !strings.Contains(logged.String(), "id=p-local") || !strings.Contains(logged.String(), "pending=true") {
		t.Errorf("pending unreadable write not logged:\n%s", logged.String())
	}
	// Pages are filled past skipped records: a short page is the last one,
	// and paging by key lists every readable record exactly once.
	if got := keys(mustRecords(t, db, store.Query{Channel: ev, Unit: store.AnyUnit, Limit: 2})); got != "north/event/e0 north/event/e1" {
		t.Fatalf("first page of 2 = %q, want e0 e1", got)
	}
	var paged []string
	for after := (*store.Key)(nil); ; {
		page := mustRecords(t, db, store.Query{Channel: ev, Unit: store.AnyUnit, Limit: 2, After: after})
		for _, r := range page {
			paged = append(paged, r.RecordID)
		}
		if len(page) < 2 {
			break
		}
		last := page[len(page)-1]
		after = &store.Key{OrgUnit: last.OrgUnit, Kind: last.Kind, RecordID: last.RecordID}
	}
	if got := strings.Join(paged, " "); got != "e0 e1 e2 e3 e4" {
		t.Fatalf("paging by key listed %q, want e0 e1 e2 e3 e4", got)
	}
	// A point lookup of a poisoned record finds nothing instead of failing.
	if recs := mustRecords(t, db, store.Query{Channel: ev, Unit: "north", Kind: "event", RecordID: "p-ext"}); len(recs) != 0 {
		t.Fatalf("point lookup of an unreadable record = %+v, want nothing", recs)
	}
	// A newer, valid version of a poisoned record is listed again.
	fixed := upsertAt(t, seq, "north", ev, "event", "p-ext", map[string]any{"fixed": true})
	mustApply(t, db, batch("north", ev, []projections.Change{fixed}))
	if r, ok := recordByID(t, db, "north", ev, "p-ext"); !ok || r.Body["fixed"] != true {
		t.Fatalf("repaired record = %+v (found %v), want its new body", r, ok)
	}
}
