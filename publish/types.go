package publish

import (
	"errors"
	"fmt"

	"github.com/fieldsync/fieldsync/events"
)

// Subject is the NATS request subject of the publish API.
const Subject = events.PublishSubject

// Request is one server-side change.
type Request struct {
	// EventID is the change's unique id and dedupe key; generated if empty.
	// Retrying with the same id within the stream's duplicate window
	// returns the original version with Duplicate set.
	EventID  string         `json:"event_id,omitempty"`
	OrgUnit  string         `json:"org_unit"` // empty: tenant-wide admin data
	Channel  string         `json:"channel"`
	Kind     string         `json:"kind"`
	RecordID string         `json:"record_id"`
	Op       string         `json:"op"` // "upsert" (default) or "delete"
	Body     map[string]any `json:"body"`
	// ExpectedVersion, when set, is the version the change is based on (0:
	// the record must not exist). A mismatch answers with code "conflict".
	ExpectedVersion *uint64 `json:"expected_version,omitempty"`
}

// Response answers a [Request].
type Response struct {
	EventID   string `json:"event_id,omitempty"`
	Stream    string `json:"stream,omitempty"`
	Version   uint64 `json:"version,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	// Content is the content the document names after a
	// [Service.PublishDocument] (nil for other changes and documents
	// without content).
	Content *Content `json:"content,omitempty"`
	Error   *Error   `json:"error,omitempty"`
}

// Error codes of [Error].
const (
	CodeInvalid = "invalid"
	// CodeTooLarge: the request or the record body is over its size limit
	// (HTTP 413). It also matches [ErrInvalid].
	CodeTooLarge    = "too_large"
	CodeConflict    = "conflict"
	CodeUnknownUnit = "unknown_unit"
	CodeInternal    = "internal"
	// CodeUnauthorized: no or an unknown bearer token (HTTP 401).
	CodeUnauthorized = "unauthorized"
	// CodeForbidden: the caller may not do this (HTTP 403): an org unit
	// that is not the integration's, a foreign Host or Origin.
	CodeForbidden = "forbidden"
	// CodeUnsupportedMedia: the body is not application/json (HTTP 415).
	CodeUnsupportedMedia = "unsupported_media_type"
)

// Error is a failed publish. It matches [ErrConflict], [ErrInvalid],
// [ErrTooLarge], [ErrUnknownUnit] and [ErrForbidden] with errors.Is.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// CurrentVersion is the record's version, with code "conflict".
	CurrentVersion *uint64 `json:"current_version,omitempty"`
}

// Sentinels for [Error] codes.
var (
	ErrInvalid = errors.New("publish: invalid request")
	// ErrTooLarge matches code too_large (which matches ErrInvalid too).
	ErrTooLarge    = errors.New("publish: request too large")
	ErrConflict    = errors.New("publish: version conflict")
	ErrUnknownUnit = errors.New("publish: unknown org unit")
	ErrForbidden   = errors.New("publish: forbidden")
)

func (e *Error) Error() string { return fmt.Sprintf("publish: %s: %s", e.Code, e.Message) }

// Is maps codes to the sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Code == CodeInvalid || e.Code == CodeTooLarge
	case ErrTooLarge:
		return e.Code == CodeTooLarge
	case ErrConflict:
		return e.Code == CodeConflict
	case ErrUnknownUnit:
		return e.Code == CodeUnknownUnit
	case ErrForbidden:
		return e.Code == CodeForbidden
	}
	return false
}
