package main

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/seed"
	"github.com/fieldsync/fieldsync/store"

	_ "modernc.org/sqlite"
)

// bulkRow is one record as the SQLite baselines load it: the columns of
// the device store's channel tables.
type bulkRow struct {
	ch             events.Channel
	unit, kind, id string
	version        int64
	eventID        string
	at             int64
	body           []byte
}

// bulkLoad is one way of loading the rows into an empty database until
// its tables are ready to query (indexes built, WAL checkpointed).
type bulkLoad struct {
	name string
	// load returns the time the load took; what it does before the clock
	// starts (such as preparing a source file) is not counted.
	load func(ctx context.Context, path string, rows []bulkRow) (time.Duration, error)
}

// bulkLoads are the SQLite baselines of the initial sync, weakest first.
// The strongest is the limit the agent is compared with.
var bulkLoads = []bulkLoad{
	{"one-row prepared INSERT, 100,000 rows a transaction", loadOneRow},
	{"the store's own bulk path (BeginBulk, 64-row INSERTs in 5,000-change batches, EndBulk)", loadStore},
	{"sorted by key, 64-row INSERTs, 100,000 rows a transaction", func(ctx context.Context, p string, r []bulkRow) (time.Duration, error) {
		return loadMultiRow(ctx, p, r, 64)
	}},
	{"sorted by key, 1,000-row INSERTs, 100,000 rows a transaction", func(ctx context.Context, p string, r []bulkRow) (time.Duration, error) {
		return loadMultiRow(ctx, p, r, 1000)
	}},
	{"INSERT ... SELECT from an attached file holding the rows, sorted", loadInsertSelect},
}

// bulkResult is the rate of one [bulkLoad].
type bulkResult struct {
	name string
	rate float64 // rows per second
}

// measureBulkLoads runs every [bulkLoad] on the same rows (those spec
// generates, as the stream holds them), each into a fresh database in dir
// with the device store's pragmas and schema, indexes built after.
func measureBulkLoads(ctx context.Context, dir string, spec seed.Spec) ([]bulkResult, error) {
	gen, err := seed.New(spec)
	if err != nil {
		return nil, err
	}
	// Generated before timing, so only SQLite is measured.
	var rows []bulkRow
	for e, ok := gen.Next(); ok; e, ok = gen.Next() {
		rows = append(rows, bulkRow{ch: e.Channel, unit: e.OrgUnit, kind: e.Kind, id: e.RecordID, version: int64(len(rows) + 1),
			eventID: e.EventID, at: e.Timestamp.UnixMilli(), body: e.Body})
	}
	var out []bulkResult
	for i, l := range bulkLoads {
		path := filepath.Join(dir, fmt.Sprintf("bulk%d.db", i))
		took, err := l.load(ctx, path, rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.name, err)
		}
		if err := checkLoaded(ctx, path, len(rows)); err != nil {
			return nil, fmt.Errorf("%s: %w", l.name, err)
		}
		out = append(out, bulkResult{name: l.name, rate: float64(len(rows)) / took.Seconds()})
		for _, suffix := range []string{"", "-wal", "-shm", ".src", ".src-wal", ".src-shm"} {
			os.Remove(path + suffix)
		}
	}
	return out, nil
}

// openRaw opens a plain SQLite database with the device store's writer
// settings.
// openEmptyRaw opens the raw database at path with its tables created.
func openEmptyRaw(ctx context.Context, path string) (*sql.DB, error) {
	db, err := openRaw(path)
	if err != nil {
		return nil, err
	}
	if err := createRawTables(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func openRaw(path string) (*sql.DB, error) {
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)", "cache_size(-65536)", "temp_store(MEMORY)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

func rawTable(ch events.Channel) string { return "records_" + string(ch) }

// createRawTables creates the store's channel tables without indexes.
func createRawTables(ctx context.Context, db *sql.DB) error {
	for _, ch := range events.Channels {
		if _, err := db.ExecContext(ctx, `CREATE TABLE `+rawTable(ch)+` (org_unit TEXT NOT NULL, kind TEXT NOT NULL,
			record_id TEXT NOT NULL, version INTEGER NOT NULL, event_id TEXT NOT NULL, origin TEXT NOT NULL DEFAULT '',
			updated_at INTEGER NOT NULL, body BLOB NOT NULL)`); err != nil {
			return err
		}
	}
	return nil
}

// finishRaw builds the store's indexes and checkpoints the WAL, as
// [store.DB.EndBulk] does.
func finishRaw(ctx context.Context, db *sql.DB) error {
	for _, ch := range events.Channels {
		t := rawTable(ch)
		for _, q := range []string{`CREATE UNIQUE INDEX ` + t + `_key ON ` + t + ` (org_unit, kind, record_id)`,
			`CREATE INDEX ` + t + `_recent ON ` + t + ` (kind, updated_at)`} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return err
			}
		}
	}
	_, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}

// inTx runs fn in one transaction.
func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

const rawTxRows = 100_000

func loadOneRow(ctx context.Context, path string, rows []bulkRow) (time.Duration, error) {
	db, err := openEmptyRaw(ctx, path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	start := time.Now()
	for i := 0; i < len(rows); i += rawTxRows {
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			stmts := map[events.Channel]*sql.Stmt{}
			for _, ch := range events.Channels {
				s, err := tx.PrepareContext(ctx, `INSERT INTO `+rawTable(ch)+` VALUES (?, ?, ?, ?, ?, '', ?, ?)`)
				if err != nil {
					return err
				}
				defer s.Close()
				stmts[ch] = s
			}
			for _, r := range rows[i:min(i+rawTxRows, len(rows))] {
				if _, err := stmts[r.ch].ExecContext(ctx, r.unit, r.kind, r.id, r.version, r.eventID, r.at, r.body); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	if err := finishRaw(ctx, db); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// loadStore is what the agent's initial sync does with the rows, minus
// the network and the decoding.
func loadStore(ctx context.Context, path string, rows []bulkRow) (time.Duration, error) {
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	start := time.Now()
	for _, ch := range events.Channels {
		if ok, err := db.BeginBulk(ctx, ch); err != nil || !ok {
			return 0, fmt.Errorf("begin bulk %s: %v %w", ch, ok, err)
		}
	}
	const batch = 5000 // the agent's default batch_size
	pending := map[events.Channel][]projections.Change{}
	flush := func(ch events.Channel) error {
		cs := pending[ch]
		if len(cs) == 0 {
			return nil
		}
		pending[ch] = cs[:0]
		_, err := db.Apply(ctx, store.Batch{Unit: benchUnit, Channel: ch, Bulk: true,
			Batch: projections.Batch{Changes: cs, LastSeq: cs[len(cs)-1].Seq}})
		return err
	}
	for _, r := range rows {
		pending[r.ch] = append(pending[r.ch], projections.Change{Seq: uint64(r.version), EventID: r.eventID, Body: r.body, UpdatedAt: r.at,
			Addr: events.Address{OrgUnit: r.unit, Channel: r.ch, Kind: r.kind, RecordID: r.id}})
		if len(pending[r.ch]) == batch {
			if err := flush(r.ch); err != nil {
				return 0, err
			}
		}
	}
	for _, ch := range events.Channels {
		if err := flush(ch); err != nil {
			return 0, err
		}
		if err := db.EndBulk(ctx, ch); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// sortedRows returns the rows ordered by table and key (the order of the
// unique index).
func sortedRows(rows []bulkRow) []bulkRow {
	s := slices.Clone(rows)
	slices.SortFunc(s, func(a, b bulkRow) int {
		return cmp.Or(cmp.Compare(a.ch, b.ch), cmp.Compare(a.unit, b.unit), cmp.Compare(a.kind, b.kind), cmp.Compare(a.id, b.id))
	})
	return s
}

// loadMultiRow inserts the rows sorted by key with per-row INSERTs of
// (at most) per rows, then builds the indexes (the sort is not timed).
func loadMultiRow(ctx context.Context, path string, rows []bulkRow, per int) (time.Duration, error) {
	rows = sortedRows(rows)
	db, err := openEmptyRaw(ctx, path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	start := time.Now()
	if err := insertMultiRow(ctx, db, rows, per); err != nil {
		return 0, err
	}
	if err := finishRaw(ctx, db); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func insertMultiRow(ctx context.Context, db *sql.DB, rows []bulkRow, per int) error {
	for i := 0; i < len(rows); i += rawTxRows {
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			stmts := map[string]*sql.Stmt{}
			defer func() {
				for _, s := range stmts {
					s.Close()
				}
			}()
			args := make([]any, 0, per*7)
			for tx1 := rows[i:min(i+rawTxRows, len(rows))]; len(tx1) > 0; {
				n := 1
				for n < min(per, len(tx1)) && tx1[n].ch == tx1[0].ch {
					n++
				}
				key := fmt.Sprintf("%s/%d", tx1[0].ch, n)
				s := stmts[key]
				if s == nil {
					var err error
					q := `INSERT INTO ` + rawTable(tx1[0].ch) + ` VALUES ` + strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,'',?,?),", n), ",")
					if s, err = tx.PrepareContext(ctx, q); err != nil {
						return err
					}
					stmts[key] = s
				}
				args = args[:0]
				for _, r := range tx1[:n] {
					args = append(args, r.unit, r.kind, r.id, r.version, r.eventID, r.at, r.body)
				}
				if _, err := s.ExecContext(ctx, args...); err != nil {
					return err
				}
				tx1 = tx1[n:]
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// loadInsertSelect copies the rows, sorted by key, from an attached
// SQLite file that already holds them (written before the clock starts):
// the cost of SQLite writing the tables and indexes with no statement
// per row at all.
func loadInsertSelect(ctx context.Context, path string, rows []bulkRow) (time.Duration, error) {
	src, err := openRaw(path + ".src")
	if err != nil {
		return 0, err
	}
	err = createRawTables(ctx, src)
	if err == nil {
		err = insertMultiRow(ctx, src, rows, 1000)
	}
	if err == nil {
		_, err = src.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	}
	src.Close()
	if err != nil {
		return 0, fmt.Errorf("source file: %w", err)
	}
	db, err := openEmptyRaw(ctx, path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	start := time.Now()
	if _, err := db.ExecContext(ctx, `ATTACH DATABASE ? AS src`, path+".src"); err != nil {
		return 0, err
	}
	err = inTx(ctx, db, func(tx *sql.Tx) error {
		for _, ch := range events.Channels {
			t := rawTable(ch)
			// The source holds the rows in key order already; a plain copy
			// between tables of one shape lets SQLite transfer them whole.
			if _, err := tx.ExecContext(ctx, `INSERT INTO main.`+t+` SELECT * FROM src.`+t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if _, err := db.ExecContext(ctx, `DETACH DATABASE src`); err != nil {
		return 0, err
	}
	if err := finishRaw(ctx, db); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// checkLoaded verifies a loaded database holds every row once, through
// its unique indexes.
func checkLoaded(ctx context.Context, path string, want int) error {
	db, err := openRaw(path)
	if err != nil {
		return err
	}
	defer db.Close()
	n := 0
	for _, ch := range events.Channels {
		var c int
		t := rawTable(ch)
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+t+` INDEXED BY `+t+`_key`).Scan(&c); err != nil {
			return err
		}
		n += c
	}
	if n != want {
		return fmt.Errorf("holds %d rows, want %d", n, want)
	}
	return nil
}
