package projections

import (
	"github.com/fieldsync/fieldsync/events"
)

// Message is one message as read from a unit stream.
type Message struct {
	Subject string
	Seq     uint64
	Data    []byte
}

// Change is one decoded, checked change to one record.
type Change struct {
	// Seq is the stream sequence of the change: the record's version after it.
	Seq      uint64
	Addr     events.Address
	EventID  string
	Deleted  bool
	Body     []byte // msgpack map; nil when Deleted
	OriginID string // device id for device-made changes, "" for the server side
	// UpdatedAt is the change's timestamp in Unix milliseconds.
	UpdatedAt int64
}

// Reject is a message that can never become a change: corrupt bytes, a
// subject outside the scheme, an envelope on another record's subject. It
// is recorded as a sync error; the messages around it are applied
// normally. (A change this build merely cannot read is [Parked] instead.)
type Reject struct {
	Seq     uint64
	Subject string
	Err     error
	// Code is a short machine-readable reason (see [Code]).
	Code string
}

// FromMessage decodes m with this build's reader (see [Reader.FromMessage]).
func FromMessage(m Message) (Change, error) { return Reader{}.FromMessage(m) }

// Batch is a run of consecutive messages of one (unit, channel), folded.
type Batch struct {
	Changes []Change
	Rejects []Reject
	// Parked are the changes the reader could not read but a newer one may
	// (see [Parkable]): the device keeps them, they are not errors.
	Parked []Parked
	// LastSeq is the highest stream sequence in the batch, applied,
	// parked or rejected: the checkpoint after the batch.
	LastSeq uint64
}

// Fold decodes msgs in order into a batch with this build's reader (see
// [Reader.Fold]).
func Fold(msgs []Message) Batch { return Reader{}.Fold(msgs) }
