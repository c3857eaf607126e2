package main

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// Phases of the apply benchmark, as the reader labels its samples.
const (
	phaseBaseline = iota
	phaseApply    // ApplyStaged until the merge finished
	phaseAfter
)

type readSample struct {
	phase int32
	what  string // "page" or "lookup"
	at    time.Duration
	d     time.Duration
}

func (s readSample) String() string {
	return fmt.Sprintf("%s at +%.2f s", s.what, s.at.Seconds())
}

// benchReader reads the live view in a loop, as the app would while the
// user works: a page of 100 events starting after a random record (key
// paging, as the app pages), then one random record looked up by id.
// Every call is timed.
type benchReader struct {
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	samples []readSample
	once    sync.Once
}

func startReader(ctx context.Context, db *store.DB, d *applyData, phase *atomic.Int32) *benchReader {
	ctx, cancel := context.WithCancel(ctx)
	r := &benchReader{cancel: cancel, done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(r.done)
		rng := rand.New(rand.NewSource(3))
		timed := func(what string, q store.Query) error {
			p := phase.Load()
			t0 := time.Now()
			_, err := db.Records(ctx, q)
			r.samples = append(r.samples, readSample{phase: p, what: what, at: t0.Sub(start), d: time.Since(t0)})
			return err
		}
		for ctx.Err() == nil {
			from := d.randomKey(rng)
			err := timed("page", store.Query{Channel: events.ChannelEvents, Unit: benchUnit, Kind: "event", Limit: 100,
				After: &store.Key{OrgUnit: benchUnit, Kind: "event", RecordID: from.RecordID}})
			if err == nil {
				k := d.randomKey(rng)
				err = timed("lookup", store.Query{Channel: events.ChannelEvents, Unit: benchUnit, Kind: k.Kind, RecordID: k.RecordID, Limit: 1})
			}
			if err != nil && ctx.Err() == nil {
				r.err = err
				return
			}
		}
	}()
	return r
}

// stop ends the reader and returns the error that stopped it, if any.
func (r *benchReader) stop() error {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		// The call the cancel interrupted is not a measurement.
		if n := len(r.samples); n > 0 {
			r.samples = r.samples[:n-1]
		}
	})
	return r.err
}

// split returns the latencies before the apply and during apply + merge,
// and the slowest call of the latter.
func (r *benchReader) split() (baseline, during []time.Duration, slowest readSample) {
	for _, s := range r.samples {
		switch s.phase {
		case phaseBaseline:
			baseline = append(baseline, s.d)
		case phaseApply:
			during = append(during, s.d)
			if s.d > slowest.d {
				slowest = s
			}
		}
	}
	return baseline, during, slowest
}
