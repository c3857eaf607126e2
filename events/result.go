package events

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// ResultStatus is the outcome of a device mutation.
type ResultStatus string

// The outcomes.
const (
	// Accepted: applied to the org unit stream; Version is the record's new version.
	Accepted ResultStatus = "accepted"
	// Conflict: the record changed since the mutation's base version; the
	// Server* fields hold its current state.
	Conflict ResultStatus = "conflict"
	// Rejected: not applied, for Reason (see the Reason constants).
	Rejected ResultStatus = "rejected"
)

// Rejection reasons.
const (
	ReasonNotAllowed   = "not_allowed"
	ReasonInvalid      = "invalid"
	ReasonUnknownKind  = "unknown_kind"
	ReasonTooLarge     = "too_large"
	ReasonWrongDevice  = "wrong_device"
	ReasonBadSubject   = "bad_subject"
	ReasonUnknownUnit  = "unknown_unit"
	ReasonBrokenChain  = "broken_chain"
	ReasonIncompatible = "unknown_version"
)

// Result is what ingest answers to one device mutation. The same mutation
// always gets the same result, however often it is delivered.
type Result struct {
	DeviceID   string       `msgpack:"dev"`
	MutationID string       `msgpack:"mut"`
	Status     ResultStatus `msgpack:"st"`
	// Version is the record's new version (Accepted).
	Version uint64 `msgpack:"ver,omitempty"`
	Reason  string `msgpack:"why,omitempty"`
	Message string `msgpack:"msg,omitempty"`
	// ServerVersion, ServerDeleted and ServerBody describe the record as the
	// server holds it (Conflict; Rejected when known).
	ServerVersion uint64 `msgpack:"sver,omitempty"`
	ServerDeleted bool   `msgpack:"sdel,omitempty"`
	ServerBody    []byte `msgpack:"sbody,omitempty"`
	// At is when ingest decided, Unix milliseconds.
	At int64 `msgpack:"at"`
}

// EncodeResult encodes r.
func EncodeResult(r *Result) ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	return msgpack.Marshal(r)
}

// DecodeResult decodes and validates a result; it never panics.
func DecodeResult(b []byte) (r *Result, err error) {
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("%w: result of %d bytes", ErrTooLarge, len(b))
	}
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("%w: decoder panic: %v", ErrMalformed, p)
		}
	}()
	r = new(Result)
	if err := msgpack.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%w: result: %v", ErrMalformed, err)
	}
	return r, r.validate()
}

func (r *Result) validate() error {
	if err := ValidToken(r.DeviceID); err != nil {
		return fieldErr("dev", ErrInvalidField, err.Error())
	}
	if err := ValidToken(r.MutationID); err != nil {
		return fieldErr("mut", ErrInvalidField, err.Error())
	}
	switch r.Status {
	case Accepted, Conflict, Rejected:
	default:
		return fieldErr("st", ErrInvalidField, fmt.Sprintf("unknown status %q", r.Status))
	}
	return nil
}
