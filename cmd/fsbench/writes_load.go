package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
)

// What a benchmark write does.
type writeKind int

const (
	writeNew    writeKind = iota // creates a record of its own
	writeShared                  // creates a record the paired device creates at the same moment
	writeChain                   // edits the record the device's previous write created, chained on it
)

func (k writeKind) String() string {
	return [...]string{"new record", "shared record", "chained edit"}[k]
}

// Outcomes of a write as seen through the agent's API.
const (
	outcomeAccepted = "accepted"
	outcomeConflict = "conflict"
	outcomeRejected = "rejected"
	// outcomePending: still shown pending on the device after the drain
	// (unconfirmed, still queued), decided by nothing yet.
	outcomePending = "still pending"
)

// benchWrite is one write of the benchmark and what became of it.
type benchWrite struct {
	dev      string
	i        int
	kind     writeKind
	record   string
	sched    time.Time // when it was due to be sent: latencies count from here
	answered time.Time // POST /v1/records answered
	err      error     // the POST failed
	mut      string    // its mutation id (202 answers)
	outcome  string    // "" until seen through the API
	seen     time.Time // when the outcome was seen
}

// eventID is the id the server gives the write's event.
func (w *benchWrite) eventID() string { return events.MutationEventID(w.dev, w.mut) }

// plan returns device idx's write number i: every tenth a shared record,
// every tenth (five later) a chained edit of the record written just
// before, the rest new records.
func plan(dev string, idx, i int) *benchWrite {
	w := &benchWrite{dev: dev, i: i, kind: writeNew, record: fmt.Sprintf("%s%06d", ownPrefix(dev), i)}
	switch i % 10 {
	case 0:
		w.kind, w.record = writeShared, fmt.Sprintf("%s%06d", sharedPrefix(idx), i)
	case 5:
		w.kind, w.record = writeChain, fmt.Sprintf("%s%06d", ownPrefix(dev), i-1)
	}
	return w
}

// ownPrefix starts the ids of the records only device dev writes;
// sharedPrefix those device idx shares with its pair.
func ownPrefix(dev string) string { return dev + "-n-" }
func sharedPrefix(idx int) string { return fmt.Sprintf("shared-p%02d-", idx/2) }

// runDevice sends device idx's writes open loop, one every period from
// start (plus its phase) until end, each POST on its own goroutine so a
// slow answer does not delay the next write; the observer follows them.
func runDevice(ctx context.Context, p *agentProc, idx int, start, end time.Time, period time.Duration, obs *observer) []*benchWrite {
	var all []*benchWrite
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * period)
		if !due.Before(end) {
			break
		}
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				wg.Wait()
				return all
			}
		}
		w := plan(p.device, idx, i)
		w.sched = due
		all = append(all, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			send(ctx, p, w, obs)
		}()
	}
	wg.Wait()
	return all
}

func send(ctx context.Context, p *agentProc, w *benchWrite, obs *observer) {
	body := map[string]any{"title": "inspection note", "device": w.dev, "n": w.i, "status": "open"}
	resp, err := p.api.Write(ctx, agent.WriteRequest{OrgUnit: benchUnit, Channel: string(events.ChannelEvents), Kind: "event",
		RecordID: w.record, Body: body})
	obs.answered(w, resp.MutationID, err, time.Now())
}
