// Package projectionstest holds the reference in-memory projection that
// fieldsync's tests compare devices against: [State] folds batches of
// [projections.Fold] the way a device must, with no SQLite and no broker.
// It is test code: nothing outside tests imports it.
package projectionstest

import (
	"sort"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
)

// Record is one record of a projection.
type Record struct {
	Addr      events.Address
	Version   uint64
	EventID   string
	Body      []byte
	UpdatedAt int64
}

// State is the in-memory projection of any number of units and channels:
// the reference model of what a device holds after applying changes.
type State struct {
	Records map[events.Address]Record
	// Checkpoints holds the last stream sequence folded, per (unit, channel).
	Checkpoints map[projections.Stream]uint64
	// Rejected counts rejected messages per (unit, channel).
	Rejected map[projections.Stream]int
	// Parked holds the parked messages per (unit, channel), in stream order.
	Parked map[projections.Stream][]projections.Parked
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Records: map[events.Address]Record{}, Checkpoints: map[projections.Stream]uint64{}, Rejected: map[projections.Stream]int{},
		Parked: map[projections.Stream][]projections.Parked{}}
}

// Apply folds b, read from stream st, into s. Changes at or below the
// stream's checkpoint are ignored (never applied twice), as are changes
// older than the record's current version. Parked messages are kept; a
// change supersedes the parked messages of its record that are older than
// it, whether it is applied or not, so that a parked change can never
// overwrite (or resurrect) a record with an older state later.
func (s *State) Apply(st projections.Stream, b projections.Batch) {
	cp := s.Checkpoints[st]
	for _, p := range b.Parked {
		if p.Seq > cp {
			s.Parked[st] = append(s.Parked[st], p)
		}
	}
	sort.SliceStable(s.Parked[st], func(i, j int) bool { return s.Parked[st][i].Seq < s.Parked[st][j].Seq })
	for _, c := range b.Changes {
		if c.Seq > cp {
			s.change(st, c)
		}
	}
	for _, r := range b.Rejects {
		if r.Seq > cp {
			s.Rejected[st]++
		}
	}
	if b.LastSeq > cp {
		s.Checkpoints[st] = b.LastSeq
	}
}

// change applies c unless the record holds a newer version, and drops the
// parked messages of c's record older than c. It reports whether c was
// applied.
func (s *State) change(st projections.Stream, c projections.Change) bool {
	kept := s.Parked[st][:0]
	for _, p := range s.Parked[st] {
		if p.Addr != c.Addr || p.Seq >= c.Seq {
			kept = append(kept, p)
		}
	}
	s.Parked[st] = kept
	if cur, ok := s.Records[c.Addr]; ok && cur.Version >= c.Seq {
		return false
	}
	if c.Deleted {
		delete(s.Records, c.Addr)
		return true
	}
	s.Records[c.Addr] = Record{Addr: c.Addr, Version: c.Seq, EventID: c.EventID, Body: c.Body, UpdatedAt: c.UpdatedAt}
	return true
}

// Unpark re-reads every parked message with r, stream by stream in stream
// order: what r reads is applied as [State.Apply] would have, what r finds
// corrupt is counted as rejected, and what r cannot read either stays
// parked. It returns how many were applied.
func (s *State) Unpark(r projections.Reader) int {
	applied := 0
	for st, parked := range s.Parked {
		left := make([]projections.Parked, 0, len(parked))
		var got []projections.Change
		for _, p := range parked {
			if !r.MayRead(p) {
				left = append(left, p)
				continue
			}
			c, err := r.FromMessage(p.Message())
			switch {
			case err == nil:
				got = append(got, c)
			case projections.Parkable(err):
				left = append(left, projections.Park(p.Message(), err))
			default:
				s.Rejected[st]++
			}
		}
		s.Parked[st] = left
		for _, c := range got {
			if s.change(st, c) {
				applied++
			}
		}
		if len(s.Parked[st]) == 0 {
			delete(s.Parked, st)
		}
	}
	return applied
}

// Sorted returns the records ordered by unit, channel, kind and id.
func (s *State) Sorted() []Record {
	out := make([]Record, 0, len(s.Records))
	for _, r := range s.Records {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return Less(out[i].Addr, out[j].Addr) })
	return out
}

// Less orders addresses by unit, channel, kind, record id.
func Less(a, b events.Address) bool {
	if a.OrgUnit != b.OrgUnit {
		return a.OrgUnit < b.OrgUnit
	}
	if a.Channel != b.Channel {
		return a.Channel < b.Channel
	}
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	return a.RecordID < b.RecordID
}
