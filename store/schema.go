package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/fieldsync/fieldsync/events"
)

// migrations are applied in order; PRAGMA user_version counts the applied.
// Each is fixed text, never assembled from Go code that may change: a
// migration that has shipped has run on devices already and must never be
// edited (TestMigrations_Shipped pins their hashes); append a new one.
var migrations = []string{
	// 1: device metadata, checkpoints, recorded bad messages and the three
	// channel tables (written out as recordTable and indexSQL generated them).
	`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
	CREATE TABLE checkpoints (
		org_unit   TEXT NOT NULL,
		channel    TEXT NOT NULL,
		last_seq   INTEGER NOT NULL DEFAULT 0,
		snapshot_done INTEGER NOT NULL DEFAULT 0,
		applied    INTEGER NOT NULL DEFAULT 0,
		rejected   INTEGER NOT NULL DEFAULT 0,
		updated_at INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (org_unit, channel)) WITHOUT ROWID;
	CREATE TABLE sync_errors (
		id       INTEGER PRIMARY KEY,
		at       INTEGER NOT NULL,
		org_unit TEXT NOT NULL,
		channel  TEXT NOT NULL,
		seq      INTEGER NOT NULL,
		subject  TEXT NOT NULL,
		code     TEXT NOT NULL,
		message  TEXT NOT NULL);CREATE TABLE records_events (
		org_unit   TEXT NOT NULL,
		kind       TEXT NOT NULL,
		record_id  TEXT NOT NULL,
		version    INTEGER NOT NULL,
		event_id   TEXT NOT NULL,
		origin     TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		body       BLOB NOT NULL);
	CREATE UNIQUE INDEX IF NOT EXISTS records_events_key ON records_events (org_unit, kind, record_id);
	CREATE INDEX IF NOT EXISTS records_events_recent ON records_events (kind, updated_at);CREATE TABLE records_admin (
		org_unit   TEXT NOT NULL,
		kind       TEXT NOT NULL,
		record_id  TEXT NOT NULL,
		version    INTEGER NOT NULL,
		event_id   TEXT NOT NULL,
		origin     TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		body       BLOB NOT NULL);
	CREATE UNIQUE INDEX IF NOT EXISTS records_admin_key ON records_admin (org_unit, kind, record_id);
	CREATE INDEX IF NOT EXISTS records_admin_recent ON records_admin (kind, updated_at);CREATE TABLE records_documents (
		org_unit   TEXT NOT NULL,
		kind       TEXT NOT NULL,
		record_id  TEXT NOT NULL,
		version    INTEGER NOT NULL,
		event_id   TEXT NOT NULL,
		origin     TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		body       BLOB NOT NULL);
	CREATE UNIQUE INDEX IF NOT EXISTS records_documents_key ON records_documents (org_unit, kind, record_id);
	CREATE INDEX IF NOT EXISTS records_documents_recent ON records_documents (kind, updated_at);`,
	// 2: offline writes. outbox queues the device's mutations in order;
	// pending is the live overlay (the device's own unconfirmed state of a
	// record, shown on top of the server's); retention schedules the
	// removal of events created on the device after they were accepted.
	`CREATE TABLE outbox (
		seq            INTEGER PRIMARY KEY AUTOINCREMENT,
		mutation_id    TEXT NOT NULL UNIQUE,
		org_unit       TEXT NOT NULL,
		channel        TEXT NOT NULL,
		kind           TEXT NOT NULL,
		record_id      TEXT NOT NULL,
		op             TEXT NOT NULL,
		base_version   INTEGER NOT NULL,
		after_mutation TEXT NOT NULL DEFAULT '',
		body           BLOB,
		created_at     INTEGER NOT NULL,
		state          TEXT NOT NULL DEFAULT 'queued',
		sent_at        INTEGER NOT NULL DEFAULT 0,
		reason         TEXT NOT NULL DEFAULT '',
		message        TEXT NOT NULL DEFAULT '',
		server_version INTEGER NOT NULL DEFAULT 0,
		server_deleted INTEGER NOT NULL DEFAULT 0,
		server_body    BLOB,
		decided_at     INTEGER NOT NULL DEFAULT 0);
	CREATE INDEX outbox_state ON outbox (state, seq);
	CREATE INDEX outbox_record ON outbox (org_unit, channel, kind, record_id, seq);
	CREATE TABLE pending (
		org_unit    TEXT NOT NULL,
		channel     TEXT NOT NULL,
		kind        TEXT NOT NULL,
		record_id   TEXT NOT NULL,
		deleted     INTEGER NOT NULL,
		body        BLOB,
		mutation_id TEXT NOT NULL,
		updated_at  INTEGER NOT NULL,
		PRIMARY KEY (org_unit, channel, kind, record_id)) WITHOUT ROWID;
	CREATE TABLE retention (
		org_unit  TEXT NOT NULL,
		kind      TEXT NOT NULL,
		record_id TEXT NOT NULL,
		until     INTEGER NOT NULL,
		PRIMARY KEY (org_unit, kind, record_id)) WITHOUT ROWID;`,
	// 3: non-blocking sync. staged holds the changes a sync downloaded
	// and the user has not applied yet (gen > applied_gen), or applied ones
	// not yet merged into the channel tables (gen <= applied_gen): the live
	// view reads those on top of the channel tables. staged_checkpoints is
	// the download position of the staging.
	`CREATE TABLE staged (
		channel    TEXT NOT NULL,
		org_unit   TEXT NOT NULL,
		kind       TEXT NOT NULL,
		record_id  TEXT NOT NULL,
		gen        INTEGER NOT NULL,
		version    INTEGER NOT NULL,
		event_id   TEXT NOT NULL,
		origin     TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		deleted    INTEGER NOT NULL,
		body       BLOB,
		PRIMARY KEY (channel, org_unit, kind, record_id)) WITHOUT ROWID;
	CREATE TABLE staged_checkpoints (
		org_unit   TEXT NOT NULL,
		channel    TEXT NOT NULL,
		last_seq   INTEGER NOT NULL DEFAULT 0,
		snapshot_done INTEGER NOT NULL DEFAULT 0,
		applied    INTEGER NOT NULL DEFAULT 0,
		rejected   INTEGER NOT NULL DEFAULT 0,
		updated_at INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (org_unit, channel)) WITHOUT ROWID;`,
	// 4: the activity log: every sync, apply, upload, reset and wipe.
	`CREATE TABLE activity (
		id       INTEGER PRIMARY KEY,
		kind     TEXT NOT NULL,
		scope    TEXT NOT NULL DEFAULT '',
		started  INTEGER NOT NULL,
		finished INTEGER NOT NULL,
		outcome  TEXT NOT NULL,
		detail   TEXT NOT NULL DEFAULT '{}');`,
	// 5: finding applied-but-unmerged staged rows without a scan.
	`CREATE INDEX staged_gen ON staged (channel, gen);`,
	// 6: parked changes: read from a unit stream but newer than the build
	// that read them (a newer envelope schema, a kind it does not accept),
	// kept as received until a build that reads them applies them (see
	// parked.go). kind, record_id and version repeat what subject and data
	// say, so a build can tell without decoding what it may read and which
	// parked changes a newer change of the same record supersedes.
	`CREATE TABLE parked (
		id        INTEGER PRIMARY KEY,
		org_unit  TEXT NOT NULL,
		channel   TEXT NOT NULL,
		seq       INTEGER NOT NULL,
		subject   TEXT NOT NULL,
		kind      TEXT NOT NULL,
		record_id TEXT NOT NULL,
		version   INTEGER NOT NULL,
		data      BLOB NOT NULL,
		reason    TEXT NOT NULL,
		message   TEXT NOT NULL,
		parked_at INTEGER NOT NULL,
		UNIQUE (org_unit, channel, seq));
	CREATE INDEX parked_record ON parked (org_unit, channel, kind, record_id, seq);`,
	// 7: staging generations. A download that is still running stages into
	// the generation after the last completed one and waits for its own
	// Apply, so staged rows and staged positions are kept per generation
	// (a record may be staged in several); ready_gen names the last
	// completed download, the one Apply makes live.
	`CREATE TABLE staged_v6 (
		channel    TEXT NOT NULL,
		org_unit   TEXT NOT NULL,
		kind       TEXT NOT NULL,
		record_id  TEXT NOT NULL,
		gen        INTEGER NOT NULL,
		version    INTEGER NOT NULL,
		event_id   TEXT NOT NULL,
		origin     TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		deleted    INTEGER NOT NULL,
		body       BLOB,
		PRIMARY KEY (channel, org_unit, kind, record_id, gen)) WITHOUT ROWID;
	INSERT INTO staged_v6 SELECT channel, org_unit, kind, record_id, gen, version, event_id, origin, updated_at, deleted, body FROM staged;
	DROP TABLE staged;
	ALTER TABLE staged_v6 RENAME TO staged;
	CREATE INDEX staged_gen ON staged (channel, gen);
	CREATE TABLE staged_checkpoints_v6 (
		org_unit   TEXT NOT NULL,
		channel    TEXT NOT NULL,
		gen        INTEGER NOT NULL,
		last_seq   INTEGER NOT NULL DEFAULT 0,
		snapshot_done INTEGER NOT NULL DEFAULT 0,
		applied    INTEGER NOT NULL DEFAULT 0,
		rejected   INTEGER NOT NULL DEFAULT 0,
		updated_at INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (org_unit, channel, gen)) WITHOUT ROWID;
	INSERT INTO staged_checkpoints_v6 SELECT org_unit, channel,
		coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'staging_gen'), 1),
		last_seq, snapshot_done, applied, rejected, updated_at FROM staged_checkpoints;
	DROP TABLE staged_checkpoints;
	ALTER TABLE staged_checkpoints_v6 RENAME TO staged_checkpoints;
	INSERT OR REPLACE INTO meta (key, value) SELECT 'ready_gen', value FROM meta
		WHERE key = 'staging_gen' AND EXISTS (SELECT 1 FROM meta WHERE key = 'staging_ready_at');`,
	// 8: write results that arrive while their channel is in bulk mode
	// (its unique index dropped) wait here and are applied when the load
	// ends, in the transaction that builds the index.
	`CREATE TABLE deferred_results (
		id      INTEGER PRIMARY KEY,
		channel TEXT NOT NULL,
		result  BLOB NOT NULL,
		until   INTEGER NOT NULL);`,
	// 9: document content on the device (see documents.go). A row exists
	// for each document whose content the user downloaded or asked for:
	// the file on disk (version, object, digest, size, path; path empty
	// before the first download), the content wanted next (want_*: the
	// record's current content, while it downloads), how much of it the
	// part file holds for certain (part_*), and the state of the request.
	`CREATE TABLE doc_files (
		org_unit     TEXT NOT NULL,
		record_id    TEXT NOT NULL,
		version      INTEGER NOT NULL DEFAULT 0,
		object       TEXT NOT NULL DEFAULT '',
		digest       TEXT NOT NULL DEFAULT '',
		size         INTEGER NOT NULL DEFAULT 0,
		path         TEXT NOT NULL DEFAULT '',
		want_version INTEGER NOT NULL DEFAULT 0,
		want_object  TEXT NOT NULL DEFAULT '',
		want_nuid    TEXT NOT NULL DEFAULT '',
		want_digest  TEXT NOT NULL DEFAULT '',
		want_type    TEXT NOT NULL DEFAULT '',
		want_size    INTEGER NOT NULL DEFAULT 0,
		want_chunks  INTEGER NOT NULL DEFAULT 0,
		part_bytes   INTEGER NOT NULL DEFAULT 0,
		part_seq     INTEGER NOT NULL DEFAULT 0,
		part_chunks  INTEGER NOT NULL DEFAULT 0,
		state        TEXT NOT NULL DEFAULT 'idle',
		error        TEXT NOT NULL DEFAULT '',
		requested_at INTEGER NOT NULL DEFAULT 0,
		updated_at   INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (org_unit, record_id)) WITHOUT ROWID;`,
}

func table(ch events.Channel) string { return "records_" + string(ch) }

// indexSQL creates a channel table's indexes: the unique record key and a
// listing index (kind, most recently changed first). A bulk load drops and
// re-creates them; the text matches migration 1's.
func indexSQL(ch events.Channel) string {
	t := table(ch)
	return fmt.Sprintf(`CREATE UNIQUE INDEX IF NOT EXISTS %[1]s_key ON %[1]s (org_unit, kind, record_id);
	CREATE INDEX IF NOT EXISTS %[1]s_recent ON %[1]s (kind, updated_at);`, t)
}

func dropIndexSQL(ch events.Channel) string {
	t := table(ch)
	return fmt.Sprintf(`DROP INDEX IF EXISTS %[1]s_key; DROP INDEX IF EXISTS %[1]s_recent;`, t)
}

func (db *DB) migrate(ctx context.Context) error {
	var v int
	if err := db.writer.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("store: database schema %d is newer than this agent (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		err := db.tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, i+1))
			return err
		})
		if err != nil {
			return fmt.Errorf("store: migration %d: %w", i+1, err)
		}
	}
	return nil
}
