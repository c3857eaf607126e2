package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"reflect"

	"modernc.org/sqlite"
)

// maxCachedStmts bounds one connection's statement cache: queries whose
// text is built at run time beyond it are compiled for each use, as
// without a cache.
const maxCachedStmts = 256

// openPool opens a database/sql pool on dsn whose connections keep each
// query's compiled statement for reuse. SQLite compiles a query's text
// into a program every time it is prepared, and for the store's short
// statements that costs more than running them (about 30% of an agent's
// CPU under a steady write load, before this cache); the driver
// ([modernc.org/sqlite]) keeps a compiled statement only inside a
// [driver.Stmt], and database/sql prepares a new one for every query.
//
// With shield, a statement runs to its end even if its context ends
// meanwhile (a context that ended before still stops it from starting):
// the writer's group transactions hold several callers' work, and SQLite
// rolls a whole transaction back when a write statement in it is
// interrupted.
func openPool(dsn string, shield bool) (*sql.DB, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(cachingConnector{Connector: c, shield: shield}), nil
}

// cachingConnector wraps the driver's connections in [cachingConn].
type cachingConnector struct {
	driver.Connector
	shield bool
}

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &cachingConn{conn: conn, stmts: map[string]*cachedStmt{}, shield: c.shield}, nil
}

// cachingConn is a driver connection whose ExecContext and QueryContext
// (what database/sql calls for queries not prepared by the caller) reuse
// a statement per query text. A statement whose rows are still open is
// busy: a second use meanwhile gets a statement of its own.
type cachingConn struct {
	conn   driver.Conn
	stmts  map[string]*cachedStmt
	shield bool // see openPool
}

// stmtCtx is the context a statement runs under.
func (c *cachingConn) stmtCtx(ctx context.Context) context.Context {
	if c.shield {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

type cachedStmt struct {
	driver.Stmt
	busy bool
}

var (
	_ driver.ExecerContext      = (*cachingConn)(nil)
	_ driver.QueryerContext     = (*cachingConn)(nil)
	_ driver.ConnBeginTx        = (*cachingConn)(nil)
	_ driver.ConnPrepareContext = (*cachingConn)(nil)
	_ driver.SessionResetter    = (*cachingConn)(nil)
	_ driver.Validator          = (*cachingConn)(nil)
	_ driver.Pinger             = (*cachingConn)(nil)
)

// stmt returns the context to run query under (see [cachingConn.stmtCtx])
// and its cached statement, compiling it on first use; transient is true
// when the caller must close it after use (the cache is full, or the
// cached one is busy). A context already ended fails at once.
func (c *cachingConn) stmt(ctx context.Context, query string) (_ context.Context, s *cachedStmt, transient bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, false, err
	}
	ctx = c.stmtCtx(ctx)
	if s, ok := c.stmts[query]; ok && !s.busy {
		return ctx, s, false, nil
	}
	ds, err := c.conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, nil, false, err
	}
	s = &cachedStmt{Stmt: ds}
	if _, ok := c.stmts[query]; ok || len(c.stmts) >= maxCachedStmts {
		return ctx, s, true, nil
	}
	c.stmts[query] = s
	return ctx, s, false, nil
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	ctx, s, transient, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if transient {
		defer s.Close()
	}
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	ctx, s, transient, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		if transient {
			s.Close()
		}
		return nil, err
	}
	if transient {
		return &stmtRows{Rows: rows, done: func() { s.Close() }}, nil
	}
	s.busy = true
	return &stmtRows{Rows: rows, done: func() { s.busy = false }}, nil
}

func (c *cachingConn) Prepare(query string) (driver.Stmt, error) { return c.conn.Prepare(query) }

func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *cachingConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *cachingConn) ResetSession(ctx context.Context) error {
	return c.conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *cachingConn) IsValid() bool { return c.conn.(driver.Validator).IsValid() }

func (c *cachingConn) Ping(ctx context.Context) error { return c.conn.(driver.Pinger).Ping(ctx) }

// Close finalizes the cached statements, then closes the connection.
func (c *cachingConn) Close() error {
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.Close())
		delete(c.stmts, q)
	}
	return errors.Join(append(errs, c.conn.Close())...)
}

// stmtRows are a cached statement's rows: closing them frees the
// statement for its next use.
type stmtRows struct {
	driver.Rows
	done func()
}

func (r *stmtRows) Close() error {
	err := r.Rows.Close()
	if r.done != nil {
		r.done()
		r.done = nil
	}
	return err
}

func (r *stmtRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *stmtRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}
