package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

// TestOpenPool_StatementCache: the pool's connections compile each query
// text once and reuse it; a query run again while its rows are still
// open (on the same connection) gets a statement of its own instead of
// resetting the open one; more distinct queries than the cache holds, and
// a schema change under a cached statement, still run correctly.
func TestOpenPool_StatementCache(t *testing.T) {
	ctx := context.Background()
	pool, err := openPool(dsn(filepath.Join(t.TempDir(), "c.db"), "immediate"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pool.SetMaxOpenConns(1) // one connection: every query shares its cache
	if _, err := pool.ExecContext(ctx, `CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	for k := range 5 {
		if _, err := pool.ExecContext(ctx, `INSERT INTO t (k, v) VALUES (?, ?)`, k, fmt.Sprint("v", k)); err != nil {
			t.Fatal(err)
		}
	}
	conn := mustCachingConn(t, pool)
	if n := len(conn.stmts); n != 2 {
		t.Fatalf("%d cached statements after 1 CREATE and 5 INSERTs of one text, want 2", n)
	}

	// Nested use of one query text in a transaction.
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	const q = `SELECT k FROM t WHERE k >= ? ORDER BY k`
	outer, err := tx.QueryContext(ctx, q, 0)
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for outer.Next() {
		var k int
		if err := outer.Scan(&k); err != nil {
			t.Fatal(err)
		}
		var inner int
		if err := tx.QueryRowContext(ctx, q, k).Scan(&inner); err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, fmt.Sprint(k, "=", inner))
	}
	if err := outer.Err(); err != nil {
		t.Fatal(err)
	}
	outer.Close()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pairs); got != "[0=0 1=1 2=2 3=3 4=4]" {
		t.Fatalf("nested reads of one query = %s, want each row once, unaffected by the inner read", got)
	}

	// Beyond the cache's bound, queries run uncached.
	for i := range maxCachedStmts + 10 {
		var v string
		if err := pool.QueryRowContext(ctx, fmt.Sprintf(`SELECT v FROM t WHERE k = 1 AND %d = %d`, i, i)).Scan(&v); err != nil || v != "v1" {
			t.Fatalf("query %d: %q, %v", i, v, err)
		}
	}
	if n := len(conn.stmts); n != maxCachedStmts {
		t.Fatalf("%d cached statements, want the bound %d", n, maxCachedStmts)
	}

	// A cached statement still runs after the schema changed under it.
	if _, err := pool.ExecContext(ctx, `ALTER TABLE t ADD COLUMN w TEXT DEFAULT 'x'`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRowContext(ctx, q, 3).Scan(&n); err != nil || n != 3 {
		t.Fatalf("cached query after a schema change: %d, %v", n, err)
	}
}

// mustCachingConn returns the pool's one connection's cache (the pool
// must have exactly one connection).
func mustCachingConn(tb testing.TB, pool *sql.DB) *cachingConn {
	tb.Helper()
	c, err := pool.Conn(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	var cc *cachingConn
	if err := c.Raw(func(dc any) error {
		cc = dc.(*cachingConn)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return cc
}
