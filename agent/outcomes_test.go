package agent

import (
	"fmt"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// TestOutcomeLog_Since: outcomes come back in order after the position
// asked for; the log keeps at most its byte bound, and a reader whose
// position was dropped is told it missed some; every add wakes waiters.
func TestOutcomeLog_Since(t *testing.T) {
	decided := func(from, n int) []store.Decided {
		var ds []store.Decided
		for i := from; i < from+n; i++ {
			ds = append(ds, store.Decided{MutationID: fmt.Sprintf("m%04d", i), State: store.StateAccepted, Version: uint64(i),
				Addr: events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: fmt.Sprintf("r%04d", i)}})
		}
		return ds
	}
	one := (&WriteOutcome{MutationID: "m0000", OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "r0000"}).size()
	l := &outcomeLog{max: 10 * one}
	woken := l.changed.wait()
	l.add(decided(1, 3))
	select {
	case <-woken:
	default:
		t.Fatal("add did not wake a waiter")
	}
	outs, last, missed := l.since(0)
	if len(outs) != 3 || last != 3 || missed || outs[0].MutationID != "m0001" || outs[2].Seq != 3 || outs[2].Version != 3 {
		t.Fatalf("since(0) = %+v, %d, %v; want m0001..m0003, seq 1..3", outs, last, missed)
	}
	if outs, last, missed = l.since(2); len(outs) != 1 || outs[0].Seq != 3 || last != 3 || missed {
		t.Fatalf("since(2) = %+v, %d, %v; want seq 3 only", outs, last, missed)
	}
	if outs, _, missed = l.since(3); len(outs) != 0 || missed {
		t.Fatalf("since(newest) = %+v, %v; want nothing", outs, missed)
	}

	l.add(decided(4, 20)) // 23 outcomes, 10 fit
	if len(l.items) != 10 || l.bytes > l.max {
		t.Fatalf("log holds %d outcomes in %d bytes, want 10 within %d", len(l.items), l.bytes, l.max)
	}
	outs, last, missed = l.since(3)
	if !missed || last != 23 || len(outs) != 10 || outs[0].Seq != 14 {
		t.Fatalf("since(3) after overflow = %d outcomes from %d, last %d, missed %v; want 14..23 and missed",
			len(outs), outs[0].Seq, last, missed)
	}
	if _, _, missed = l.since(13); missed {
		t.Fatal("since(13): told missed, but 14 is the oldest kept")
	}
}
