package natsjs

import (
	"errors"
	"fmt"
)

var (
	// ErrVersionConflict: the record's current version is not the one the
	// writer based its change on. Use [errors.As] with *[ConflictError] for the
	// current version.
	ErrVersionConflict = errors.New("natsjs: record version conflict")
	// ErrCheckpointTooOld: the stream no longer holds every change after the
	// device's checkpoint; the device must do a full resync.
	ErrCheckpointTooOld = errors.New("natsjs: checkpoint older than the stream's first message")
	// ErrStalled: changes were pending but none arrived within the stall timeout.
	ErrStalled = errors.New("natsjs: no progress while changes are pending")
	// ErrDeliveryGap: the broker delivered messages the cursor never got
	// (in flight when the connection dropped, or a node was lost). Devices
	// do not ack, so the broker does not send them again: reopen the cursor
	// from the checkpoint.
	ErrDeliveryGap = errors.New("natsjs: changes lost in flight")
	// ErrUnknownUnit: the org unit has no stream on the broker.
	ErrUnknownUnit = errors.New("natsjs: org unit has no stream")
	// ErrUploadNotAcked: the broker did not acknowledge an upload in time;
	// it goes up again with the next upload (the mutation id dedupes it).
	ErrUploadNotAcked = errors.New("natsjs: upload not acknowledged")
	// ErrUploadQuota: the broker refused an upload because the device has
	// as many uploads waiting for ingest as its quota allows, or FS_UPLOADS
	// is full. The upload stays queued and goes up again later.
	ErrUploadQuota = errors.New("natsjs: upload refused: pending-upload quota reached")
	// ErrLegacyUploads: FS_UPLOADS was created by an older build and could
	// not be changed to a work queue (see [Client.ProvisionIngest]).
	ErrLegacyUploads = errors.New("natsjs: FS_UPLOADS from an older build")
)

// ConflictError carries the record's current version (stream sequence of its
// latest change, 0 if it has none) when a publish loses a version race.
type ConflictError struct {
	Subject  string
	Expected uint64
	Current  uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%v: %s: expected version %d, current %d", ErrVersionConflict, e.Subject, e.Expected, e.Current)
}

func (e *ConflictError) Unwrap() error { return ErrVersionConflict }
