package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

// observer follows one device's answered writes through the agent's own
// API until each is seen decided, as the app would see it: the agent's
// status stream (/v1/stream) announces each write's outcome ("event:
// write": accepted, conflict or rejected) as soon as it is committed, so
// the observer makes no requests to learn them. Conflicts are undone
// through the API as the user would. Only if the stream reports that it
// dropped outcomes ("writes-missed") does the observer fall back to
// looking at the records every poll interval (GET /v1/records and
// GET /v1/conflicts), which the report says.
type observer struct {
	p    *agentProc
	poll time.Duration
	wake chan struct{}
	// ready is closed once the status stream is open: writes sent before
	// would not be announced on it.
	ready     chan struct{}
	readyOnce sync.Once

	mu   sync.Mutex
	open map[string][]*benchWrite // record id -> undecided answered writes, in answer order
	// mine maps the mutation id of each answered write to it, byEvent
	// its server event id.
	mine, byEv map[string]*benchWrite
	// early are outcomes announced before their POST's answer was seen.
	early map[string]agent.WriteOutcome
	// toUndo are seen conflicts not yet undone.
	toUndo   []string
	missed   int  // writes-missed events
	fallback bool // polling since a writes-missed event
	errs     int  // failed API reads
	reads    int  // API requests made to follow the writes
}

func newObserver(p *agentProc, poll time.Duration) *observer {
	return &observer{p: p, poll: poll, wake: make(chan struct{}, 1), ready: make(chan struct{}),
		open: map[string][]*benchWrite{}, mine: map[string]*benchWrite{}, byEv: map[string]*benchWrite{}, early: map[string]agent.WriteOutcome{}}
}

func (o *observer) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// answered records a POST's answer; a 202 makes the write one to follow.
func (o *observer) answered(w *benchWrite, mut string, err error, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w.answered, w.err, w.mut = at, err, mut
	if err != nil {
		return
	}
	o.open[w.record] = append(o.open[w.record], w)
	o.mine[mut] = w
	o.byEv[w.eventID()] = w
	if out, ok := o.early[mut]; ok {
		delete(o.early, mut)
		o.outcomeLocked(w, out, at)
	}
}

// announced decides the write an outcome event names, seen at at.
func (o *observer) announced(out agent.WriteOutcome, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.mine[out.MutationID]
	if w == nil {
		o.early[out.MutationID] = out
		return
	}
	o.outcomeLocked(w, out, at)
}

func (o *observer) outcomeLocked(w *benchWrite, out agent.WriteOutcome, at time.Time) {
	outcome := outcomeAccepted
	switch out.State {
	case store.StateConflict:
		outcome = outcomeConflict
	case store.StateRejected:
		outcome = outcomeRejected
	}
	o.decideLocked(w, outcome, at)
	if outcome == outcomeConflict && w.kind == writeShared {
		o.toUndo = append(o.toUndo, out.MutationID)
		o.signal()
	}
}

// undecided returns how many answered writes have no outcome yet.
func (o *observer) undecided() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, ws := range o.open {
		n += len(ws)
	}
	return n
}

// run undoes conflicts as they are seen and, once fallen back, looks at
// undecided writes every poll interval, until ctx ends.
func (o *observer) run(ctx context.Context) {
	t := time.NewTicker(o.poll)
	defer t.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-t.C:
		}
		o.mu.Lock()
		fallback := o.fallback
		o.mu.Unlock()
		var err error
		if fallback {
			err = o.check(ctx)
		}
		if err == nil {
			err = o.undo(ctx)
		}
		if err != nil && ctx.Err() == nil {
			o.mu.Lock()
			o.errs++
			o.mu.Unlock()
			fmt.Fprintf(os.Stderr, "%s: %v\n", o.p.device, err)
		}
	}
}

// undo undoes the seen conflicts of shared records, as the user would
// (each shared record is written once per device, so undoing drops
// nothing else the benchmark follows).
func (o *observer) undo(ctx context.Context) error {
	for {
		o.mu.Lock()
		if len(o.toUndo) == 0 {
			o.mu.Unlock()
			return nil
		}
		id := o.toUndo[0]
		o.toUndo = o.toUndo[1:]
		o.reads++
		o.mu.Unlock()
		if err := o.p.api.Resolve(ctx, id, store.ResolveUndo); err != nil {
			return err
		}
	}
}

// Bounds of one fallback look: point lookups of shared records, and the
// page of the device's own records.
const (
	maxLookups = 4
	maxPage    = 32
)

// snapshot returns the undecided writes answered before now, by record.
func (o *observer) snapshot(now time.Time) (map[string][]*benchWrite, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string][]*benchWrite{}
	conflicts := false
	for rec, ws := range o.open {
		for _, w := range ws {
			if w.answered.Before(now) {
				out[rec] = append(out[rec], w)
				conflicts = conflicts || w.kind == writeShared
			}
		}
	}
	return out, conflicts
}

func (o *observer) count(n int) {
	o.mu.Lock()
	o.reads += n
	o.mu.Unlock()
}

// decide gives w its outcome.
func (o *observer) decide(w *benchWrite, outcome string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.decideLocked(w, outcome, at)
}

func (o *observer) decideLocked(w *benchWrite, outcome string, at time.Time) {
	if w.outcome != "" {
		return
	}
	w.outcome, w.seen = outcome, at
	ws := o.open[w.record]
	if i := slices.Index(ws, w); i >= 0 {
		ws = slices.Delete(ws, i, i+1)
	}
	if len(ws) == 0 {
		delete(o.open, w.record)
	} else {
		o.open[w.record] = ws
	}
}

// check reads what the agent shows for every undecided write.
func (o *observer) check(ctx context.Context) error {
	start := time.Now()
	open, conflicts := o.snapshot(start)
	if len(open) == 0 {
		return nil
	}
	if conflicts {
		if err := o.checkConflicts(ctx, open); err != nil {
			return err
		}
	}
	var own, shared []string
	for rec, ws := range open {
		if ws[0].kind == writeShared {
			shared = append(shared, rec)
		} else {
			own = append(own, rec)
		}
	}
	// Each look costs the agent little however far behind it is: the
	// oldest few undecided records only (the agent decides writes in the
	// order they were made, so those are the ones to change next).
	slices.Sort(shared)
	for _, rec := range shared[:min(len(shared), maxLookups)] {
		if err := o.lookup(ctx, rec, open[rec]); err != nil {
			return err
		}
	}
	if len(own) == 0 {
		return nil
	}
	// The device's own records have ids in one key range (prefix and a
	// zero-padded number): one page from just before the oldest undecided
	// one covers it and those written after it.
	slices.Sort(own)
	prefix, lo := splitRecordID(own[0])
	_, hi := splitRecordID(own[len(own)-1])
	after := &store.Key{OrgUnit: benchUnit, Kind: "event", RecordID: prefix}
	if lo > 0 {
		after.RecordID = fmt.Sprintf("%s%06d", prefix, lo-1)
	}
	o.count(1)
	recs, err := o.p.api.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: benchUnit, Kind: "event", After: after,
		Limit: min(hi-lo+1, maxPage)})
	if err != nil {
		return err
	}
	o.settle(recs, open, time.Now())
	return nil
}

// splitRecordID splits "dev03-n-000123" into "dev03-n-" and 123.
func splitRecordID(id string) (string, int) {
	i := strings.LastIndexByte(id, '-') + 1
	n, _ := strconv.Atoi(id[i:])
	return id[:i], n
}

// settle decides the writes a read shows accepted: a record no longer
// pending that carries one of the device's writes to it holds every write
// the device made to it before (a chained write is accepted only after
// the one it builds on).
func (o *observer) settle(recs []store.Record, open map[string][]*benchWrite, at time.Time) {
	for _, r := range recs {
		ws := open[r.RecordID]
		if len(ws) == 0 || r.Pending {
			continue
		}
		o.mu.Lock()
		w := o.byEv[r.EventID]
		o.mu.Unlock()
		if w == nil || w.record != r.RecordID {
			continue
		}
		for _, x := range ws {
			o.decide(x, outcomeAccepted, at)
		}
	}
}

func (o *observer) lookup(ctx context.Context, rec string, ws []*benchWrite) error {
	o.count(1)
	recs, err := o.p.api.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: benchUnit, Kind: "event", RecordID: rec, Limit: 1})
	if err != nil {
		return err
	}
	o.settle(recs, map[string][]*benchWrite{rec: ws}, time.Now())
	return nil
}

// checkConflicts decides the writes GET /v1/conflicts lists, then undoes
// them as the user would (each shared record is written once per device,
// so undoing drops nothing else the benchmark follows).
func (o *observer) checkConflicts(ctx context.Context, open map[string][]*benchWrite) error {
	o.count(1)
	cs, err := o.p.api.Conflicts(ctx)
	if err != nil {
		return err
	}
	at := time.Now()
	byMut := map[string]*benchWrite{}
	for _, ws := range open {
		for _, w := range ws {
			byMut[w.mut] = w
		}
	}
	for _, c := range cs {
		if w := byMut[c.MutationID]; w != nil {
			outcome := outcomeConflict
			if c.State == store.StateRejected {
				outcome = outcomeRejected
			}
			o.mu.Lock()
			o.decideLocked(w, outcome, at)
			if w.kind == writeShared {
				o.toUndo = append(o.toUndo, c.MutationID)
			}
			o.mu.Unlock()
		}
	}
	return o.undo(ctx)
}

// sweep looks once more, at every record, for the writes still undecided
// at the end: those GET /v1/conflicts lists or GET /v1/records shows
// accepted get that outcome (seen now), those whose record the device
// still shows pending are marked so (unconfirmed, not lost).
func (o *observer) sweep(ctx context.Context, prefixes ...string) error {
	open, _ := o.snapshot(time.Now())
	if len(open) == 0 {
		return nil
	}
	if err := o.checkConflicts(ctx, open); err != nil {
		return err
	}
	open, _ = o.snapshot(time.Now())
	for _, prefix := range prefixes {
		q := store.Query{Channel: events.ChannelEvents, Unit: benchUnit, Kind: "event", Limit: 1000,
			After: &store.Key{OrgUnit: benchUnit, Kind: "event", RecordID: prefix}}
		for len(open) > 0 {
			page, err := o.p.api.RecordsPage(ctx, q)
			if err != nil {
				return err
			}
			at, more := time.Now(), page.Next != ""
			for _, r := range page.Records {
				if !strings.HasPrefix(r.RecordID, prefix) {
					more = false
					break
				}
				for _, w := range open[r.RecordID] {
					if r.Pending {
						o.decide(w, outcomePending, at)
					}
				}
			}
			o.settle(page.Records, open, at)
			if !more {
				break
			}
			if q.After, err = localapi.ParseCursor(page.Next); err != nil {
				return err
			}
		}
	}
	return nil
}

// watchStream reads the agent's status stream until ctx ends: each
// "write" event decides the write it names, a "writes-missed" event
// turns on the fallback.
func (o *observer) watchStream(ctx context.Context) {
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.p.api.BaseURL+"/v1/stream", nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+o.p.api.Token)
		resp, err := o.p.api.HTTP.Do(req)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		o.readyOnce.Do(func() { close(o.ready) })
		o.readEvents(bufio.NewScanner(resp.Body))
		resp.Body.Close()
	}
}

func (o *observer) readEvents(sc *bufio.Scanner) {
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var name string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && name == "write":
			var out agent.WriteOutcome
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &out); err != nil {
				fmt.Fprintf(os.Stderr, "%s: bad write event: %v\n", o.p.device, err)
				continue
			}
			o.announced(out, time.Now())
		case strings.HasPrefix(line, "data: ") && name == "writes-missed":
			o.mu.Lock()
			o.missed++
			o.fallback = true
			o.mu.Unlock()
			o.signal()
		}
	}
}
