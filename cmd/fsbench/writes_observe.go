package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

// observer follows one device's answered writes through the agent's own
// API until each is seen decided, as the app would see it: a record that
// is no longer pending and carries the device's write (accepted), or the
// write listed in GET /v1/conflicts (conflict or rejected). It looks
// whenever the agent's status stream (/v1/stream) reports a change, and
// every poll interval while writes are undecided, so an outcome is seen at
// most one poll interval (plus one request) after the agent shows it.
type observer struct {
	p    *agentProc
	poll time.Duration
	wake chan struct{}

	mu   sync.Mutex
	open map[string][]*benchWrite // record id -> undecided answered writes, in answer order
	// mine maps the event id of each answered write to it.
	mine map[string]*benchWrite
	// conflicts are seen conflicts not yet undone.
	toUndo []string
	errs   int // failed API reads
	reads  int // API requests made to follow the writes
}

func newObserver(p *agentProc, poll time.Duration) *observer {
	return &observer{p: p, poll: poll, wake: make(chan struct{}, 1), open: map[string][]*benchWrite{}, mine: map[string]*benchWrite{}}
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
	o.mine[w.eventID()] = w
	o.signal()
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

// run looks until ctx ends.
func (o *observer) run(ctx context.Context) {
	t := time.NewTimer(o.poll)
	defer t.Stop()
	for ctx.Err() == nil {
		if o.undecided() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-o.wake:
			}
		} else {
			t.Reset(o.poll)
			select {
			case <-ctx.Done():
				return
			case <-o.wake:
			case <-t.C:
			}
		}
		if err := o.check(ctx); err != nil && ctx.Err() == nil {
			o.mu.Lock()
			o.errs++
			o.mu.Unlock()
			fmt.Fprintf(os.Stderr, "%s: %v\n", o.p.device, err)
		}
	}
}

// Bounds of one look: point lookups of shared records, and the page of
// the device's own records.
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
		w := o.mine[r.EventID]
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
			o.decide(w, outcome, at)
			if w.kind == writeShared {
				o.toUndo = append(o.toUndo, c.MutationID)
			}
		}
	}
	for len(o.toUndo) > 0 {
		id := o.toUndo[0]
		o.toUndo = o.toUndo[1:]
		o.count(1)
		if err := o.p.api.Resolve(ctx, id, store.ResolveUndo); err != nil {
			return err
		}
	}
	return nil
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

// watchStream wakes the observer at every event of the agent's status
// stream until ctx ends.
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
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data:") {
				o.signal()
			}
		}
		resp.Body.Close()
	}
}
