-- user_version 9
-- index outbox_record on outbox
CREATE INDEX outbox_record ON outbox (org_unit, channel, kind, record_id, seq);
-- index outbox_state on outbox
CREATE INDEX outbox_state ON outbox (state, seq);
-- index parked_record on parked
CREATE INDEX parked_record ON parked (org_unit, channel, kind, record_id, seq);
-- index records_admin_key on records_admin
CREATE UNIQUE INDEX records_admin_key ON records_admin (org_unit, kind, record_id);
-- index records_admin_recent on records_admin
CREATE INDEX records_admin_recent ON records_admin (kind, updated_at);
-- index records_documents_key on records_documents
CREATE UNIQUE INDEX records_documents_key ON records_documents (org_unit, kind, record_id);
-- index records_documents_recent on records_documents
CREATE INDEX records_documents_recent ON records_documents (kind, updated_at);
-- index records_events_key on records_events
CREATE UNIQUE INDEX records_events_key ON records_events (org_unit, kind, record_id);
-- index records_events_recent on records_events
CREATE INDEX records_events_recent ON records_events (kind, updated_at);
-- index sqlite_autoindex_outbox_1 on outbox
;
-- index sqlite_autoindex_parked_1 on parked
;
-- index staged_gen on staged
CREATE INDEX staged_gen ON staged (channel, gen);
-- table activity on activity
CREATE TABLE activity (
		id       INTEGER PRIMARY KEY,
		kind     TEXT NOT NULL,
		scope    TEXT NOT NULL DEFAULT '',
		started  INTEGER NOT NULL,
		finished INTEGER NOT NULL,
		outcome  TEXT NOT NULL,
		detail   TEXT NOT NULL DEFAULT '{}');
-- table checkpoints on checkpoints
CREATE TABLE checkpoints (
		org_unit   TEXT NOT NULL,
		channel    TEXT NOT NULL,
		last_seq   INTEGER NOT NULL DEFAULT 0,
		snapshot_done INTEGER NOT NULL DEFAULT 0,
		applied    INTEGER NOT NULL DEFAULT 0,
		rejected   INTEGER NOT NULL DEFAULT 0,
		updated_at INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (org_unit, channel)) WITHOUT ROWID;
-- table deferred_results on deferred_results
CREATE TABLE deferred_results (
		id      INTEGER PRIMARY KEY,
		channel TEXT NOT NULL,
		result  BLOB NOT NULL,
		until   INTEGER NOT NULL);
-- table doc_files on doc_files
CREATE TABLE doc_files (
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
		PRIMARY KEY (org_unit, record_id)) WITHOUT ROWID;
-- table meta on meta
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- table outbox on outbox
CREATE TABLE outbox (
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
-- table parked on parked
CREATE TABLE parked (
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
-- table pending on pending
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
-- table records_admin on records_admin
CREATE TABLE records_admin (
		org_unit   TEXT NOT NULL,
		kind       TEXT NOT NULL,
		record_id  TEXT NOT NULL,
		version    INTEGER NOT NULL,
		event_id   TEXT NOT NULL,
		origin     TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		body       BLOB NOT NULL);
-- table records_documents on records_documents
CREATE TABLE records_documents (
		org_unit   TEXT NOT NULL,
		kind       TEXT NOT NULL,
		record_id  TEXT NOT NULL,
		version    INTEGER NOT NULL,
		event_id   TEXT NOT NULL,
		origin     TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		body       BLOB NOT NULL);
-- table records_events on records_events
CREATE TABLE records_events (
		org_unit   TEXT NOT NULL,
		kind       TEXT NOT NULL,
		record_id  TEXT NOT NULL,
		version    INTEGER NOT NULL,
		event_id   TEXT NOT NULL,
		origin     TEXT NOT NULL DEFAULT '',
		updated_at INTEGER NOT NULL,
		body       BLOB NOT NULL);
-- table retention on retention
CREATE TABLE retention (
		org_unit  TEXT NOT NULL,
		kind      TEXT NOT NULL,
		record_id TEXT NOT NULL,
		until     INTEGER NOT NULL,
		PRIMARY KEY (org_unit, kind, record_id)) WITHOUT ROWID;
-- table sqlite_sequence on sqlite_sequence
CREATE TABLE sqlite_sequence(name,seq);
-- table staged on staged
CREATE TABLE "staged" (
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
-- table staged_checkpoints on staged_checkpoints
CREATE TABLE "staged_checkpoints" (
		org_unit   TEXT NOT NULL,
		channel    TEXT NOT NULL,
		gen        INTEGER NOT NULL,
		last_seq   INTEGER NOT NULL DEFAULT 0,
		snapshot_done INTEGER NOT NULL DEFAULT 0,
		applied    INTEGER NOT NULL DEFAULT 0,
		rejected   INTEGER NOT NULL DEFAULT 0,
		updated_at INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (org_unit, channel, gen)) WITHOUT ROWID;
-- table sync_errors on sync_errors
CREATE TABLE sync_errors (
		id       INTEGER PRIMARY KEY,
		at       INTEGER NOT NULL,
		org_unit TEXT NOT NULL,
		channel  TEXT NOT NULL,
		seq      INTEGER NOT NULL,
		subject  TEXT NOT NULL,
		code     TEXT NOT NULL,
		message  TEXT NOT NULL);
