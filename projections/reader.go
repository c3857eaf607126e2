package projections

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fieldsync/fieldsync/events"
)

// Reader is what a build can read of a unit stream: the newest envelope
// schema it decodes and the record kinds it accepts. The zero Reader is
// this build: [events.SchemaVersion] and every kind.
//
// A message a Reader cannot read only because the message is newer than
// the reader (a newer schema, a kind it does not accept) is not an error:
// [Reader.Fold] returns it as [Parked], the device keeps it, and a later
// reader that can read it applies it ([State.Unpark] is the reference of
// how).
type Reader struct {
	// MaxSchemaVersion is the newest envelope schema read; 0 means
	// [events.SchemaVersion]. A lower value pins the reader to an older
	// schema (the agent's max_schema_version setting); changes written with
	// a newer one are parked. A higher value reads newer envelopes by the
	// fields this build knows (see [events.DecodeUpTo]), as a build whose
	// newer schema only added fields would.
	MaxSchemaVersion int
	// Kinds restricts the record kinds read (nil: every kind); changes of
	// other kinds are parked.
	Kinds events.KindSet
}

// Parked is a message its reader could not read but a newer reader may:
// an envelope of a newer schema, or a record kind the reader does not
// accept. Its subject was well-formed; its bytes are kept as received.
type Parked struct {
	Seq     uint64
	Subject string
	// Addr is the record the subject names.
	Addr events.Address
	Data []byte
	// Version is the envelope's schema version (0 if it could not be read).
	Version int
	Err     error
	// Code is "unknown_version" or "unknown_kind" (see [Code]).
	Code string
}

// Message returns the parked message as it was read.
func (p Parked) Message() Message { return Message{Subject: p.Subject, Seq: p.Seq, Data: p.Data} }

// Parkable reports whether err (from [Reader.FromMessage]) means the
// message is newer than its reader, rather than bad: such a message is
// kept for a newer reader, never dropped.
func Parkable(err error) bool {
	return errors.Is(err, events.ErrUnknownVersion) || errors.Is(err, events.ErrUnknownKind)
}

func (r Reader) maxVersion() int {
	if r.MaxSchemaVersion <= 0 {
		return events.SchemaVersion
	}
	return r.MaxSchemaVersion
}

// SchemaVersion is the newest envelope schema r reads.
func (r Reader) SchemaVersion() int { return r.maxVersion() }

// Validate returns nil if r's kinds are well-formed.
func (r Reader) Validate() error {
	if r.MaxSchemaVersion < 0 {
		return fmt.Errorf("%w: max schema version %d", events.ErrInvalidField, r.MaxSchemaVersion)
	}
	return r.Kinds.Validate()
}

// FromMessage decodes m and checks that the envelope belongs on m's
// subject. Errors wrap the sentinels of package events; those for which
// [Parkable] holds mean r is too old for m: a schema newer than r reads
// ([events.ErrUnknownVersion]) or a kind r does not accept
// ([events.ErrUnknownKind]). A message with a bad subject is never
// parkable.
func (r Reader) FromMessage(m Message) (Change, error) {
	addr, err := events.ParseSubject(m.Subject)
	if err != nil {
		return Change{}, err
	}
	var e events.Envelope
	if err := events.DecodeUpTo(m.Data, &e, r.maxVersion()); err != nil {
		return Change{}, err
	}
	if e.Address() != addr {
		return Change{}, fmt.Errorf("%w: subject %s carries %s/%s/%s/%s", events.ErrSubjectMismatch,
			m.Subject, e.OrgUnit, e.Channel, e.Kind, e.RecordID)
	}
	if err := r.Kinds.Check(addr.Channel, addr.Kind); err != nil {
		return Change{}, err
	}
	c := Change{Seq: m.Seq, Addr: addr, EventID: e.EventID, Deleted: e.Op == events.OpDelete,
		OriginID: e.Origin.DeviceID, UpdatedAt: e.Timestamp.UnixMilli()}
	if !c.Deleted {
		c.Body = e.Body
	}
	return c, nil
}

// Fold decodes msgs in order into a batch. A message that fails becomes a
// [Reject], or [Parked] when it is only newer than r; neither stops the
// rest.
func (r Reader) Fold(msgs []Message) Batch {
	b := Batch{Changes: make([]Change, 0, len(msgs))}
	for _, m := range msgs {
		if m.Seq > b.LastSeq {
			b.LastSeq = m.Seq
		}
		c, err := r.FromMessage(m)
		switch {
		case err == nil:
			b.Changes = append(b.Changes, c)
		case Parkable(err):
			b.Parked = append(b.Parked, Park(m, err))
		default:
			b.Rejects = append(b.Rejects, Reject{Seq: m.Seq, Subject: m.Subject, Err: err, Code: Code(err)})
		}
	}
	return b
}

// Park keeps m, which failed with the parkable err; it copies the bytes,
// which a consumer reuses.
func Park(m Message, err error) Parked {
	addr, _ := events.ParseSubject(m.Subject) // parsed by FromMessage already
	v, _ := events.PeekVersion(m.Data)
	return Parked{Seq: m.Seq, Subject: m.Subject, Addr: addr, Data: bytes.Clone(m.Data), Version: v, Err: err, Code: Code(err)}
}

// MayRead reports whether r may read p, judging by p's schema version and
// kind alone; false means unparking p with r is pointless. (True is no
// promise: decoding may still park or reject it.)
func (r Reader) MayRead(p Parked) bool {
	return p.Version <= r.maxVersion() && r.Kinds.Accepts(p.Addr.Channel, p.Addr.Kind)
}
