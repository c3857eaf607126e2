package agent

import (
	"sync"

	"github.com/fieldsync/fieldsync/store"
)

// outcomeLogBytes bounds the outcomes the agent keeps for apps that follow
// them ([Agent.Outcomes]): about 5,000 outcomes of typical size.
const outcomeLogBytes = 1 << 20

// WriteOutcome is what the server decided for one of the device's writes,
// in the order the device learned the decisions: the app follows its
// writes with [Agent.Outcomes] (the local API's "write" stream events)
// instead of polling records. It is announced after the store committed
// it, so a read that follows shows the same.
type WriteOutcome struct {
	// Seq numbers the outcomes the agent announced since it started.
	Seq        uint64 `json:"seq"`
	MutationID string `json:"mutation_id"`
	OrgUnit    string `json:"org_unit"`
	Channel    string `json:"channel"`
	Kind       string `json:"kind"`
	RecordID   string `json:"record_id"`
	// State is "accepted", "conflict" or "rejected" (a sync error to
	// resolve, listed by GET /v1/conflicts).
	State string `json:"state"`
	// Version is the record's version after an accepted write.
	Version uint64 `json:"version,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// size is roughly what o takes in memory and on the wire.
func (o *WriteOutcome) size() int {
	return 96 + len(o.MutationID) + len(o.OrgUnit) + len(o.Channel) + len(o.Kind) + len(o.RecordID) + len(o.Reason)
}

// outcomeLog keeps the latest announced outcomes, bounded by bytes: an app
// that falls further behind is told it missed some.
type outcomeLog struct {
	mu      sync.Mutex
	items   []WriteOutcome // oldest first
	bytes   int
	max     int
	last    uint64 // Seq of the newest outcome (0: none yet)
	changed notifier
}

// add announces decided writes.
func (l *outcomeLog) add(ds []store.Decided) {
	if len(ds) == 0 {
		return
	}
	l.mu.Lock()
	for _, d := range ds {
		l.last++
		o := WriteOutcome{Seq: l.last, MutationID: d.MutationID, OrgUnit: d.Addr.OrgUnit, Channel: string(d.Addr.Channel),
			Kind: d.Addr.Kind, RecordID: d.Addr.RecordID, State: d.State, Version: d.Version, Reason: d.Reason}
		l.items = append(l.items, o)
		l.bytes += o.size()
	}
	drop := 0
	for l.bytes > l.max && drop < len(l.items)-1 {
		l.bytes -= l.items[drop].size()
		drop++
	}
	if drop > 0 {
		l.items = append(l.items[:0:0], l.items[drop:]...)
	}
	l.mu.Unlock()
	l.changed.signal()
}

// since returns the outcomes after Seq after, the newest Seq, and whether
// some after it are no longer kept (the caller fell behind).
func (l *outcomeLog) since(after uint64) (outs []WriteOutcome, last uint64, missed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.items) > 0 && after+1 < l.items[0].Seq {
		missed = true
	}
	for i := range l.items {
		if l.items[i].Seq > after {
			outs = append(outs, l.items[i:]...)
			break
		}
	}
	return outs, l.last, missed
}

// Outcomes returns the write outcomes announced after Seq after (0: every
// one still kept), the newest Seq (start following from it to get only
// what comes next), and missed when outcomes after it were dropped before
// the caller read them: it should then re-read GET /v1/conflicts and the
// records it follows. The agent keeps about 1 MiB of outcomes. A write
// decided while its channel's first download is loading in bulk is
// announced by nothing: reads show it once the load is done.
func (a *Agent) Outcomes(after uint64) (outs []WriteOutcome, last uint64, missed bool) {
	return a.outcomes.since(after)
}

// OutcomesChanged returns a channel closed when the next outcome is
// announced. Take it before calling [Agent.Outcomes] so nothing announced
// in between is missed.
func (a *Agent) OutcomesChanged() <-chan struct{} { return a.outcomes.changed.wait() }
