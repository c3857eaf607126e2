package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
)

// ErrClosed is returned by every method after [DB.Close].
var ErrClosed = errors.New("store: closed")

// DB is the device database. It is safe for concurrent use; writes are
// serialised on a single connection.
type DB struct {
	path    string
	writer  *sql.DB
	commit  *committer // runs write transactions on writer (see [DB.tx])
	reader  *sql.DB
	changes changes
	// unreadable: records listings skipped (see [DB.UnreadableRecords]).
	unreadable unreadable
}

// Options tune [Open].
type Options struct {
	// CacheMiB is the writer's page cache in MiB (default 64).
	CacheMiB int
	// Readers is the size of the read pool (default 4).
	Readers int
	// Log receives the store's warnings, such as a record skipped as
	// unreadable (default slog.Default()).
	Log *slog.Logger
	// OnCommit, when set, is called after every committed write (from the
	// writing goroutine; it must not block): the agent's status-change
	// notifier.
	OnCommit func()
}

// Open opens (creating if needed) the database at path and migrates it to
// the current schema. A table left without its indexes by an interrupted
// bulk load is finished here, before anything reads it.
func Open(ctx context.Context, path string, o Options) (*DB, error) {
	if o.CacheMiB == 0 {
		o.CacheMiB = 64
	}
	if o.Readers == 0 {
		o.Readers = 4
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	w, err := openPool(dsn(path, "immediate", fmt.Sprintf("cache_size(-%d)", o.CacheMiB<<10), "temp_store(MEMORY)"), true)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	db := &DB{path: path, writer: w, commit: newCommitter(), unreadable: unreadable{log: o.Log}}
	db.changes.onCommit = o.OnCommit
	if err := db.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	r, err := openPool(dsn(path, "deferred", "query_only(1)", "cache_size(-32768)", "mmap_size(1073741824)"), false)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open readers %s: %w", path, err)
	}
	r.SetMaxOpenConns(o.Readers)
	db.reader = r
	if err := db.finishBulk(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// dsn builds a connection string; txlock is how transactions begin:
// "immediate" for the writer (no lock upgrade deadlocks), "deferred" for
// readers (a read transaction takes no write lock).
func dsn(path, txlock string, pragmas ...string) string {
	q := url.Values{}
	for _, p := range append([]string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)"}, pragmas...) {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", txlock)
	return "file:" + filepath.ToSlash(path) + "?" + q.Encode()
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Close closes both pools.
func (db *DB) Close() error {
	var errs []error
	if db.reader != nil {
		errs = append(errs, db.reader.Close())
	}
	errs = append(errs, db.writer.Close())
	return errors.Join(errs...)
}
