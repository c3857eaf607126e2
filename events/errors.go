package events

import (
	"errors"
	"fmt"
)

// Sentinel errors; every error this package returns wraps one of them, so
// callers test with [errors.Is].
var (
	// ErrMalformed: the bytes are not a well-formed msgpack envelope.
	ErrMalformed = errors.New("events: malformed envelope")
	// ErrUnknownVersion: the envelope was written with a newer schema than
	// its reader reads. A device keeps such a change parked until a build
	// that reads the schema starts; a version that is not a schema version
	// at all (negative, absurdly large) is [ErrInvalidField].
	ErrUnknownVersion = errors.New("events: unknown schema version")
	// ErrMissingField: a required field is absent.
	ErrMissingField = errors.New("events: missing field")
	// ErrInvalidField: a field holds a value outside its domain.
	ErrInvalidField = errors.New("events: invalid field")
	// ErrTooLarge: a body or message exceeds its size limit.
	ErrTooLarge = errors.New("events: too large")
	// ErrUnknownKind: the record kind is not among those its reader accepts
	// (see [KindSet]). A device keeps such a change parked, as for
	// [ErrUnknownVersion].
	ErrUnknownKind = errors.New("events: unknown record kind")
	// ErrBadSubject: a subject does not follow the fieldsync scheme or holds
	// an invalid token.
	ErrBadSubject = errors.New("events: bad subject")
	// ErrSubjectMismatch: an envelope arrived on a subject other than its own.
	ErrSubjectMismatch = errors.New("events: envelope does not match its subject")
)

// FieldError says which envelope field made decoding or validation fail.
type FieldError struct {
	Field  string
	Reason string
	Err    error // one of the sentinel errors
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Reason)
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, sentinel error, reason string) error {
	return &FieldError{Field: field, Reason: reason, Err: sentinel}
}
