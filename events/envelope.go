package events

import (
	"fmt"
	"time"
)

// SchemaVersion is the envelope schema this build writes and the newest it
// reads. Decoding an envelope with a newer version fails with
// [ErrUnknownVersion] (see [DecodeUpTo] for a reader pinned to another
// version).
const SchemaVersion = 1

// maxSchemaVersion bounds what can be a schema version at all: larger
// values (and negative ones) are corrupt, not newer.
const maxSchemaVersion = 1 << 20

// MaxBodySize is the largest encoded record body accepted, in bytes.
const MaxBodySize = 256 << 10

// Channel is one of the three sync channels a device projects.
type Channel string

// The sync channels.
const (
	ChannelEvents    Channel = "events"
	ChannelAdmin     Channel = "admin"
	ChannelDocuments Channel = "documents"
)

// Channels lists every channel in a stable order.
var Channels = []Channel{ChannelEvents, ChannelAdmin, ChannelDocuments}

// Valid reports whether c is a known channel.
func (c Channel) Valid() bool {
	return c == ChannelEvents || c == ChannelAdmin || c == ChannelDocuments
}

// ParseChannel returns the channel named s or an error wrapping [ErrInvalidField].
func ParseChannel(s string) (Channel, error) {
	c := Channel(s)
	if !c.Valid() {
		return "", fmt.Errorf("%w: unknown channel %q (want events, admin or documents)", ErrInvalidField, s)
	}
	return c, nil
}

// Op is what a change does to its record.
type Op string

// The operations.
const (
	OpUpsert Op = "upsert"
	OpDelete Op = "delete"
)

// Valid reports whether o is a known operation.
func (o Op) Valid() bool { return o == OpUpsert || o == OpDelete }

// Origin says who made a change: the server side (DeviceID empty) or a
// device, together with the device's mutation id.
type Origin struct {
	DeviceID   string
	MutationID string
	// BaseVersion is the record version a device's change was based on
	// (0: the device believed the record did not exist).
	BaseVersion uint64
	// After names the device's earlier mutation of the same record that this
	// one builds on while both are unconfirmed ("" if none). Ingest accepts
	// the change on top of that mutation's result.
	After string
}

// IsServer reports whether the change originated on the server side.
func (o Origin) IsServer() bool { return o.DeviceID == "" }

// Envelope is one change to one record. It is the only message shape on the
// wire; [Encode] and [Decode] convert it to and from msgpack.
type Envelope struct {
	// EventID is unique per change and doubles as the JetStream dedupe id.
	EventID string
	// OrgUnit is the owning org unit; empty for tenant-wide admin data.
	OrgUnit  string
	Channel  Channel
	Kind     string
	RecordID string
	Op       Op
	// Body is the record's content, an encoded msgpack map. Empty for deletes.
	Body []byte
	// SchemaVersion is the version of the envelope schema the writer used.
	SchemaVersion int
	Origin        Origin
	// Timestamp is when the change was made, in UTC.
	Timestamp time.Time
}

// Address returns the record address the envelope is about.
func (e *Envelope) Address() Address {
	return Address{OrgUnit: e.OrgUnit, Channel: e.Channel, Kind: e.Kind, RecordID: e.RecordID}
}

// Subject returns the subject the envelope is published on.
func (e *Envelope) Subject() (string, error) { return e.Address().Subject() }

// Validate checks every field and returns an error wrapping
// [ErrMissingField], [ErrInvalidField] or [ErrUnknownVersion] (a schema
// newer than [SchemaVersion]); a body is checked by [ValidateBody]
// ([ErrInvalidBody], [ErrTooLarge]).
func (e *Envelope) Validate() error { return e.validate(SchemaVersion) }

// validate is [Envelope.Validate] for a reader of schemas up to maxVersion.
func (e *Envelope) validate(maxVersion int) error {
	if e.SchemaVersion == 0 {
		return fieldErr("v", ErrMissingField, "schema version missing")
	}
	if e.SchemaVersion < 0 || e.SchemaVersion > maxSchemaVersion {
		return fieldErr("v", ErrInvalidField, fmt.Sprintf("schema version %d is not a schema version", e.SchemaVersion))
	}
	if e.SchemaVersion > maxVersion {
		return fieldErr("v", ErrUnknownVersion, fmt.Sprintf("schema version %d, this reader reads up to %d", e.SchemaVersion, maxVersion))
	}
	if e.EventID == "" {
		return fieldErr("id", ErrMissingField, "event id missing")
	}
	if err := ValidToken(e.EventID); err != nil {
		return fieldErr("id", ErrInvalidField, err.Error())
	}
	if err := e.Address().Validate(); err != nil {
		return err
	}
	if !e.Op.Valid() {
		return fieldErr("op", ErrInvalidField, fmt.Sprintf("unknown operation %q", e.Op))
	}
	if err := e.validateBody(); err != nil {
		return err
	}
	if e.Origin.DeviceID != "" {
		if err := ValidToken(e.Origin.DeviceID); err != nil {
			return fieldErr("origin.device", ErrInvalidField, err.Error())
		}
		if err := ValidToken(e.Origin.MutationID); err != nil {
			return fieldErr("origin.mutation", ErrInvalidField, err.Error())
		}
		if e.Origin.After != "" {
			if err := ValidToken(e.Origin.After); err != nil {
				return fieldErr("origin.after", ErrInvalidField, err.Error())
			}
		}
	}
	if e.Timestamp.IsZero() {
		return fieldErr("ts", ErrMissingField, "timestamp missing")
	}
	return nil
}

func (e *Envelope) validateBody() error {
	switch {
	case e.Op == OpUpsert && len(e.Body) == 0:
		return fieldErr("body", ErrMissingField, "upsert without a body")
	case len(e.Body) == 0:
		return nil
	}
	return ValidateBody(e.Body)
}
