package main

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

// Phases of the apply benchmark, as the reader and writer label their
// samples.
const (
	phaseBaseline = iota
	phaseApply    // Apply until the merge finished
	phaseAfter
)

type readSample struct {
	phase int32
	what  string // "page", "lookup", "write" or "post" (the write's POST alone)
	at    time.Duration
	d     time.Duration
}

func (s readSample) String() string {
	return fmt.Sprintf("%s at +%.2f s", s.what, s.at.Seconds())
}

// samples collects timed calls from several goroutines.
type samples struct {
	mu    sync.Mutex
	start time.Time
	all   []readSample
}

func (s *samples) add(phase int32, what string, t0 time.Time, d time.Duration) {
	s.mu.Lock()
	s.all = append(s.all, readSample{phase: phase, what: what, at: t0.Sub(s.start), d: d})
	s.mu.Unlock()
}

// split returns the latencies of what before the apply and during apply +
// merge, and the slowest call of the latter.
func (s *samples) split(what string) (baseline, during []time.Duration, slowest readSample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.all {
		if x.what != what && !(what == "read" && (x.what == "page" || x.what == "lookup")) {
			continue
		}
		switch x.phase {
		case phaseBaseline:
			baseline = append(baseline, x.d)
		case phaseApply:
			during = append(during, x.d)
			if x.d > slowest.d {
				slowest = x
			}
		}
	}
	return baseline, during, slowest
}

// appSide is what the tablet app does meanwhile, through the local HTTP
// API: a reader (pages of 100 events after a random record by key, and
// random records looked up by id) and a writer making edits, both open
// loop, each call timed from its scheduled time (a write until a read
// shows it).
type appSide struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	s      samples
	mu     sync.Mutex
	err    error
	once   sync.Once
}

func startAppSide(ctx context.Context, api *localapi.Client, d *applyData, readRate, writeRate int, phase *atomic.Int32) *appSide {
	ctx, cancel := context.WithCancel(ctx)
	a := &appSide{cancel: cancel, s: samples{start: time.Now()}}
	a.wg.Add(2)
	go func() { defer a.wg.Done(); a.read(ctx, api, d, readRate, phase) }()
	go func() { defer a.wg.Done(); a.write(ctx, api, d, writeRate, phase) }()
	return a
}

func (a *appSide) fail(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
	a.cancel()
}

// read reads open loop at rate requests a second (latency from each
// one's scheduled time, so a stall is not hidden), alternately a page and
// a lookup; rate 0 reads back to back instead (a stress test).
func (a *appSide) read(ctx context.Context, api *localapi.Client, d *applyData, rate int, phase *atomic.Int32) {
	rng := rand.New(rand.NewSource(3))
	var mu sync.Mutex // rng
	query := func(i int) (string, store.Query) {
		mu.Lock()
		defer mu.Unlock()
		k := d.randomKey(rng)
		if i%2 == 0 {
			return "page", store.Query{Channel: events.ChannelEvents, Unit: benchUnit, Kind: "event", Limit: 100,
				After: &store.Key{OrgUnit: benchUnit, Kind: "event", RecordID: k.RecordID}}
		}
		return "lookup", store.Query{Channel: events.ChannelEvents, Unit: benchUnit, Kind: k.Kind, RecordID: k.RecordID, Limit: 1}
	}
	timed := func(i int, due time.Time) {
		p := phase.Load()
		what, q := query(i)
		_, err := api.Records(ctx, q)
		if err == nil {
			a.s.add(p, what, due, time.Since(due))
		}
		a.fail(ctx, err)
	}
	if rate <= 0 {
		for i := 0; ctx.Err() == nil; i++ {
			timed(i, time.Now())
		}
		return
	}
	openLoop(ctx, rate, func(i int, due time.Time) { timed(i, due) })
}

// openLoop calls fn(i, due) on its own goroutine at each due time, rate
// times a second, until ctx ends, and waits for the calls to return.
func openLoop(ctx context.Context, rate int, fn func(i int, due time.Time)) {
	period := time.Second / time.Duration(rate)
	start := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * period)
		select {
		case <-time.After(time.Until(due)):
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i, due)
		}()
	}
}

func (a *appSide) write(ctx context.Context, api *localapi.Client, d *applyData, rate int, phase *atomic.Int32) {
	if rate <= 0 {
		return
	}
	rng := rand.New(rand.NewSource(4))
	var mu sync.Mutex // rng
	openLoop(ctx, rate, func(i int, due time.Time) {
		mu.Lock()
		k := d.keptKey(rng)
		mu.Unlock()
		p := phase.Load()
		answered, err := writeVisible(ctx, api, k, i)
		if err != nil {
			a.fail(ctx, err)
			return
		}
		a.s.add(p, "write", due, time.Since(due))
		a.s.add(p, "post", due, answered.Sub(due))
	})
}

// writeVisible edits record k through POST /v1/records and reads it back
// until the edit shows; it returns when the POST was answered.
func writeVisible(ctx context.Context, api *localapi.Client, k store.Key, n int) (time.Time, error) {
	if _, err := api.Write(ctx, agent.WriteRequest{OrgUnit: k.OrgUnit, Channel: string(events.ChannelEvents), Kind: k.Kind,
		RecordID: k.RecordID, Body: map[string]any{"title": "edited on the tablet", "bench_write": n}}); err != nil {
		return time.Time{}, fmt.Errorf("write: %w", err)
	}
	answered := time.Now()
	for tries := 0; ; tries++ {
		recs, err := api.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: k.OrgUnit, Kind: k.Kind, RecordID: k.RecordID, Limit: 1})
		if err != nil {
			return answered, fmt.Errorf("read back: %w", err)
		}
		if len(recs) == 1 && recs[0].Pending && recs[0].Body["bench_write"] == float64(n) {
			return answered, nil
		}
		if tries == 100 {
			return answered, fmt.Errorf("write %d to %s not visible after %d reads: %+v", n, k.RecordID, tries, recs)
		}
	}
}

// stop ends the app side and returns the error that stopped it, if any.
func (a *appSide) stop() error {
	a.once.Do(func() {
		a.cancel()
		a.wg.Wait()
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}
