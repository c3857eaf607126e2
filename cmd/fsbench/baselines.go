package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsserver"
	"github.com/fieldsync/fieldsync/seed"

	_ "modernc.org/sqlite"
)

// measureConsume reads the whole stream with an ordered consumer, first
// without touching the payload, then decoding each envelope; it returns
// both rates in messages per second.
func measureConsume(ctx context.Context, srv *natsserver.Server, n int) (raw, decoded float64, err error) {
	nc, err := srv.Connect("fsbench-consume")
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, err
	}
	stream, _ := events.OrgStream(benchUnit)
	for pass, decode := range []bool{false, true} {
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return 0, 0, err
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(4000))
		if err != nil {
			return 0, 0, err
		}
		var e events.Envelope
		start := time.Now()
		for i := 0; i < n; i++ {
			m, err := it.Next()
			if err != nil {
				return 0, 0, err
			}
			if decode {
				if err := events.DecodeInto(m.Data(), &e); err != nil {
					return 0, 0, err
				}
			}
		}
		rate := float64(n) / time.Since(start).Seconds()
		it.Stop()
		if pass == 0 {
			raw = rate
		} else {
			decoded = rate
		}
	}
	return raw, decoded, nil
}

// measureSQLite bulk-loads the same rows the stream holds into a plain
// SQLite table of the projection's shape, the fast way: WAL, large
// transactions, one prepared statement, indexes built after the load.
func measureSQLite(ctx context.Context, path string, spec seed.Spec) (float64, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-65536)&_pragma=temp_store(MEMORY)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (org_unit TEXT, kind TEXT, record_id TEXT, version INTEGER,
		event_id TEXT, origin TEXT, updated_at INTEGER, body BLOB)`); err != nil {
		return 0, err
	}
	gen, err := seed.New(spec)
	if err != nil {
		return 0, err
	}
	// Generate before timing, so only SQLite is measured.
	var rows []*events.Envelope
	for e, ok := gen.Next(); ok; e, ok = gen.Next() {
		rows = append(rows, e)
	}
	start := time.Now()
	if err := loadRows(ctx, db, rows); err != nil {
		return 0, err
	}
	for _, q := range []string{`CREATE UNIQUE INDEX t_key ON t (org_unit, kind, record_id)`, `CREATE INDEX t_recent ON t (kind, updated_at)`, `PRAGMA wal_checkpoint(TRUNCATE)`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return 0, fmt.Errorf("%s: %w", strings.Fields(q)[0], err)
		}
	}
	return float64(len(rows)) / time.Since(start).Seconds(), nil
}

func loadRows(ctx context.Context, db *sql.DB, rows []*events.Envelope) error {
	const txRows = 100_000
	for i := 0; i < len(rows); i += txRows {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		for j, e := range rows[i:min(i+txRows, len(rows))] {
			if _, err := stmt.ExecContext(ctx, e.OrgUnit, e.Kind, e.RecordID, i+j+1, e.EventID, "", e.Timestamp.UnixMilli(), e.Body); err != nil {
				return err
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}
