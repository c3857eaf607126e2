package store

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/singleflight"

	"github.com/fieldsync/fieldsync/events"
)

// changes tracks the write transactions the store commits: a sequence that
// moves with every commit, the hook told of each, and the live-view counts
// cached until the next commit.
type changes struct {
	seq      atomic.Uint64
	onCommit func()
	mu       sync.Mutex
	counts   map[events.Channel]cachedCount
	flight   singleflight.Group
}

type cachedCount struct {
	seq uint64
	n   int
}

// committed records a committed write: cached counts are stale from now on
// and [Options.OnCommit] is told.
func (db *DB) committed() {
	db.changes.seq.Add(1)
	if f := db.changes.onCommit; f != nil {
		f()
	}
}

// Commits returns how many write transactions the store has committed since
// it was opened: it moves with every change of what the store holds.
func (db *DB) Commits() uint64 { return db.changes.seq.Load() }

// LiveCount returns how many records the live view of channel ch holds
// (every unit), as [DB.Count] does. The count is kept until the next write
// commits, so reading it again and again while nothing changes costs no
// query; concurrent callers share one count.
func (db *DB) LiveCount(ctx context.Context, ch events.Channel) (int, error) {
	c := &db.changes
	seq := c.seq.Load()
	c.mu.Lock()
	cached, ok := c.counts[ch]
	c.mu.Unlock()
	if ok && cached.seq == seq {
		return cached.n, nil
	}
	v, err, _ := c.flight.Do(string(ch)+"@"+strconv.FormatUint(seq, 10), func() (any, error) {
		// seq was read before the count started: a write committing meanwhile
		// makes the next call count again. The count is shared, so one
		// caller leaving does not cancel it for the others.
		n, err := db.Count(context.WithoutCancel(ctx), Query{Channel: ch, Unit: AnyUnit})
		if err != nil {
			return 0, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.counts == nil {
			c.counts = map[events.Channel]cachedCount{}
		}
		if cur, ok := c.counts[ch]; !ok || cur.seq <= seq {
			c.counts[ch] = cachedCount{seq: seq, n: n}
		}
		return n, nil
	})
	if err != nil {
		return 0, err
	}
	return v.(int), nil
}
