package projections

import (
	"sort"

	"github.com/fieldsync/fieldsync/events"
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
	Checkpoints map[Stream]uint64
	// Rejected counts rejected messages per (unit, channel).
	Rejected map[Stream]int
}

// Stream names one (unit, channel) pair, the unit of checkpointing.
type Stream struct {
	Unit    string
	Channel events.Channel
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Records: map[events.Address]Record{}, Checkpoints: map[Stream]uint64{}, Rejected: map[Stream]int{}}
}

// Apply folds b, read from stream st, into s. Changes at or below the
// stream's checkpoint are ignored (never applied twice), as are changes
// older than the record's current version.
func (s *State) Apply(st Stream, b Batch) {
	cp := s.Checkpoints[st]
	for _, c := range b.Changes {
		if c.Seq <= cp {
			continue
		}
		cur, ok := s.Records[c.Addr]
		if ok && cur.Version >= c.Seq {
			continue
		}
		if c.Deleted {
			delete(s.Records, c.Addr)
			continue
		}
		s.Records[c.Addr] = Record{Addr: c.Addr, Version: c.Seq, EventID: c.EventID, Body: c.Body, UpdatedAt: c.UpdatedAt}
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
