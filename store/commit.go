package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// groupWindow bounds how long one group takes new operations: then it
// commits, so the first operation's wait for its commit stays short.
const groupWindow = 20 * time.Millisecond

// committer runs the store's write transactions with group commit: the
// short operations that ask for the single writer while another group
// holds it run together in one SQLite transaction, each in a savepoint
// of its own, and commit once. Under load this is what keeps a write's cost from
// growing with the load: a commit (its WAL writes and locks) costs about
// as much as a small write, and operations waiting together share one.
// An operation that fails rolls back to its savepoint and fails alone; a
// commit that fails fails every operation of its group (none of them is
// in the database).
type committer struct {
	mu     sync.Mutex
	queue  []*txOp
	queued atomic.Int64  // len(queue), read by long operations to yield
	lead   chan struct{} // capacity 1: held while a group runs
}

// txOp is one caller's transaction function and its answer.
type txOp struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	done chan error // capacity 1
	// short: a small write (a local write, results) that may join a group
	// already running. Others (a download batch, a merge chunk, a bulk
	// step) only start a group, so that a short write queued before them
	// does not wait for them to commit.
	short bool
}

func newCommitter() *committer { return &committer{lead: make(chan struct{}, 1)} }

// waiting reports whether an operation waits for the writer.
func (c *committer) waiting() bool { return c.queued.Load() > 0 }

func (c *committer) push(op *txOp) {
	c.mu.Lock()
	c.queue = append(c.queue, op)
	c.queued.Store(int64(len(c.queue)))
	c.mu.Unlock()
}

// pop takes the oldest waiting operation (nil: none); with shortOnly,
// only if it is short.
func (c *committer) pop(shortOnly bool) *txOp {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 || shortOnly && !c.queue[0].short {
		return nil
	}
	op := c.queue[0]
	c.queue[0] = nil
	c.queue = c.queue[1:]
	c.queued.Store(int64(len(c.queue)))
	return op
}

// tx runs fn in a write transaction, perhaps shared with the short
// operations of other callers that wait meanwhile (see [committer]). fn
// must not keep tx, and must leave it usable (its statements may fail;
// the savepoint takes care of them).
func (db *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	return db.runTx(ctx, fn, false)
}

// shortTx is [DB.tx] for a small write, which may also join a group
// another caller already runs.
func (db *DB) shortTx(ctx context.Context, fn func(*sql.Tx) error) error {
	return db.runTx(ctx, fn, true)
}

func (db *DB) runTx(ctx context.Context, fn func(*sql.Tx) error, short bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &txOp{ctx: ctx, fn: fn, done: make(chan error, 1), short: short}
	c := db.commit
	c.push(op)
	for {
		select {
		case err := <-op.done:
			return err
		case c.lead <- struct{}{}: // nobody runs a group: this caller does
			db.runGroup()
			<-c.lead
		}
	}
}

// runGroup runs the waiting operations in one transaction, taking new
// ones for up to groupWindow, and answers each.
func (db *DB) runGroup() {
	c := db.commit
	first := c.pop(false)
	if first == nil {
		return
	}
	// The transaction belongs to the group, not to a caller: one caller's
	// context ending must not roll it back (a caller's statements still
	// stop at its context's end: see cachingConn).
	tx, err := db.writer.BeginTx(context.Background(), nil)
	if err != nil {
		first.done <- fmt.Errorf("store: begin: %w", err)
		return
	}
	var ok []*txOp
	start := time.Now()
	for op := first; op != nil; op = c.pop(true) {
		err := runOp(tx, op)
		if errors.Is(err, errGroupAborted) {
			tx.Rollback()
			for _, o := range append(ok, op) {
				o.done <- fmt.Errorf("store: transaction aborted: %w", err)
			}
			return
		}
		if err != nil {
			op.done <- err
		} else {
			ok = append(ok, op)
		}
		if time.Since(start) > groupWindow {
			break
		}
	}
	if len(ok) == 0 {
		tx.Rollback()
		return
	}
	if err := tx.Commit(); err != nil {
		for _, o := range ok {
			o.done <- fmt.Errorf("store: commit: %w", err)
		}
		return
	}
	db.committed() // before any caller returns: what it reads next is counted anew
	for _, o := range ok {
		o.done <- nil
	}
}

// errGroupAborted: the savepoint of a failed operation could not be
// rolled back (SQLite rolled the whole transaction back, as it does after
// an I/O error or a full disk).
var errGroupAborted = errors.New("store: group transaction aborted")

// runOp runs op in a savepoint of tx.
func runOp(tx *sql.Tx, op *txOp) error {
	if err := op.ctx.Err(); err != nil {
		return err
	}
	bg := context.Background()
	if _, err := tx.ExecContext(bg, `SAVEPOINT op`); err != nil {
		return fmt.Errorf("%w: %w", errGroupAborted, err)
	}
	err := op.fn(tx)
	if err == nil {
		if _, rerr := tx.ExecContext(bg, `RELEASE op`); rerr != nil {
			return fmt.Errorf("%w: %w", errGroupAborted, rerr)
		}
		return nil
	}
	if _, rerr := tx.ExecContext(bg, `ROLLBACK TO op`); rerr != nil {
		return fmt.Errorf("%w: %w (after %w)", errGroupAborted, rerr, err)
	}
	if _, rerr := tx.ExecContext(bg, `RELEASE op`); rerr != nil {
		return fmt.Errorf("%w: %w (after %w)", errGroupAborted, rerr, err)
	}
	return err
}
