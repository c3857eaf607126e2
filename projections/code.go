package projections

import (
	"errors"

	"github.com/fieldsync/fieldsync/events"
)

// Code maps a decode error to the short reason recorded with a sync error.
func Code(err error) string {
	for _, c := range []struct {
		err  error
		code string
	}{
		{events.ErrBadSubject, "bad_subject"},
		{events.ErrSubjectMismatch, "subject_mismatch"},
		{events.ErrUnknownVersion, "unknown_version"},
		{events.ErrTooLarge, "too_large"},
		{events.ErrUnknownKind, "unknown_kind"},
		{events.ErrMissingField, "missing_field"},
		{events.ErrInvalidField, "invalid_field"},
		{events.ErrMalformed, "malformed"},
	} {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "error"
}
