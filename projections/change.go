package projections

import (
	"fmt"

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

// Reject is a message that could not become a change. It is recorded as a
// sync error; the messages around it are applied normally.
type Reject struct {
	Seq     uint64
	Subject string
	Err     error
	// Code is a short machine-readable reason (see [Code]).
	Code string
}

// FromMessage decodes m and checks that the envelope belongs on m's
// subject. Errors wrap the sentinels of package events.
func FromMessage(m Message) (Change, error) {
	addr, err := events.ParseSubject(m.Subject)
	if err != nil {
		return Change{}, err
	}
	var e events.Envelope
	if err := events.DecodeInto(m.Data, &e); err != nil {
		return Change{}, err
	}
	if e.Address() != addr {
		return Change{}, fmt.Errorf("%w: subject %s carries %s/%s/%s/%s", events.ErrSubjectMismatch,
			m.Subject, e.OrgUnit, e.Channel, e.Kind, e.RecordID)
	}
	c := Change{Seq: m.Seq, Addr: addr, EventID: e.EventID, Deleted: e.Op == events.OpDelete,
		OriginID: e.Origin.DeviceID, UpdatedAt: e.Timestamp.UnixMilli()}
	if !c.Deleted {
		c.Body = e.Body
	}
	return c, nil
}

// Batch is a run of consecutive messages of one (unit, channel), folded.
type Batch struct {
	Changes []Change
	Rejects []Reject
	// LastSeq is the highest stream sequence in the batch, applied or
	// rejected: the checkpoint after the batch.
	LastSeq uint64
}

// Fold decodes msgs in order into a batch. A message that fails becomes a
// [Reject]; it never stops the rest.
func Fold(msgs []Message) Batch {
	b := Batch{Changes: make([]Change, 0, len(msgs))}
	for _, m := range msgs {
		if m.Seq > b.LastSeq {
			b.LastSeq = m.Seq
		}
		c, err := FromMessage(m)
		if err != nil {
			b.Rejects = append(b.Rejects, Reject{Seq: m.Seq, Subject: m.Subject, Err: err, Code: Code(err)})
			continue
		}
		b.Changes = append(b.Changes, c)
	}
	return b
}
