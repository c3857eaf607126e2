package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// errWait: the mutation builds on one not yet decided; try again later.
var errWait = errors.New("ingest: previous mutation not decided yet")

// maxWaits bounds how often a mutation waits for the one it builds on
// before it is rejected as a broken chain.
const maxWaits = 30

// decide returns the result of upload u, to be remembered and delivered
// by the caller; nil (with no error) for an upload that names no mutation
// it could be answered on.
func (in *Ingester) decide(ctx context.Context, u *natsjs.Upload) (*events.Result, error) {
	dev, addr, err := events.ParseUploadSubject(u.Subject)
	if err != nil {
		return in.reject(ctx, u, "", "", events.ReasonBadSubject, err)
	}
	e, err := events.Decode(u.Data)
	if err != nil {
		return in.reject(ctx, u, dev, mutationFromMsgID(dev, u.MsgID), reasonFor(err), err)
	}
	mut := e.Origin.MutationID
	if addr == (events.Address{}) { // stored under fs.up.<device>: the envelope names the record
		addr = e.Address()
	}
	switch {
	case e.Origin.DeviceID != dev:
		return in.reject(ctx, u, dev, mutationFromMsgID(dev, u.MsgID), events.ReasonWrongDevice,
			fmt.Errorf("upload on device %s's subject claims device %q", dev, e.Origin.DeviceID))
	case e.Address() != addr:
		return in.reject(ctx, u, dev, mut, events.ReasonBadSubject, fmt.Errorf("envelope for %+v on subject %s", e.Address(), u.Subject))
	case u.Address != "" && u.Address != addr.Key():
		return in.reject(ctx, u, dev, mut, events.ReasonBadSubject, fmt.Errorf("envelope for %+v with %s %q", e.Address(), events.AddressHeader, u.Address))
	case addr.OrgUnit == "":
		return in.reject(ctx, u, dev, mut, events.ReasonBadSubject, errors.New("devices cannot write tenant-wide data"))
	}
	if err := addr.Validate(); err != nil {
		return in.reject(ctx, u, dev, mut, events.ReasonBadSubject, err)
	}
	prior, err := in.mlog.Get(ctx, dev, mut)
	if err != nil || prior != nil {
		return prior, err // decided before: the same answer again
	}
	if err := in.rights.Allowed(dev, addr); err != nil {
		return in.result(e, events.Rejected, events.ReasonNotAllowed, err.Error()), nil
	}
	if in.access != nil {
		if err := in.access.MayWrite(dev, addr); err != nil {
			return in.result(e, events.Rejected, events.ReasonNotAllowed, err.Error()), nil
		}
	}
	return in.apply(ctx, u, e)
}

// apply appends e to its org unit stream if the record is still at the
// version e was based on.
func (in *Ingester) apply(ctx context.Context, u *natsjs.Upload, e *events.Envelope) (*events.Result, error) {
	expected, res, err := in.expectedVersion(ctx, u, e)
	if res != nil || err != nil {
		return res, err
	}
	server := *e
	server.EventID = events.MutationEventID(e.Origin.DeviceID, e.Origin.MutationID)
	if events.ValidToken(server.EventID) != nil {
		return in.result(e, events.Rejected, events.ReasonInvalid, "device or mutation id too long"), nil
	}
	ack, err := in.pub.Publish(ctx, &server, natsjs.PublishOptions{ExpectedVersion: &expected})
	var conflict *natsjs.ConflictError
	switch {
	case err == nil:
		r := in.result(e, events.Accepted, "", "")
		r.Version = ack.Version
		return r, nil
	case errors.As(err, &conflict):
		return in.conflict(ctx, e)
	case errors.Is(err, natsjs.ErrUnknownUnit):
		return in.result(e, events.Rejected, events.ReasonUnknownUnit, err.Error()), nil
	case errors.Is(err, events.ErrInvalidField), errors.Is(err, events.ErrMissingField):
		return in.result(e, events.Rejected, events.ReasonInvalid, err.Error()), nil
	}
	return nil, err
}

// expectedVersion is the version e must find: its base version, or the
// version its device's previous mutation of the record produced.
func (in *Ingester) expectedVersion(ctx context.Context, u *natsjs.Upload, e *events.Envelope) (uint64, *events.Result, error) {
	if e.Origin.After == "" {
		return e.Origin.BaseVersion, nil, nil
	}
	prev, err := in.mlog.Get(ctx, e.Origin.DeviceID, e.Origin.After)
	switch {
	case err != nil:
		return 0, nil, err
	case prev == nil && u.Delivered < maxWaits:
		return 0, nil, fmt.Errorf("%w: %s after %s", errWait, e.Origin.MutationID, e.Origin.After)
	case prev == nil:
		return 0, in.result(e, events.Rejected, events.ReasonBrokenChain, "builds on mutation "+e.Origin.After+" which never arrived"), nil
	case prev.Status != events.Accepted:
		r, err := in.conflict(ctx, e)
		return 0, r, err
	}
	return prev.Version, nil, nil
}

// conflict answers a mutation whose base is stale — unless the stream
// already holds this very mutation (applied before a crash), which makes
// it accepted.
func (in *Ingester) conflict(ctx context.Context, e *events.Envelope) (*events.Result, error) {
	if v, err := in.pub.FindMutation(ctx, e.Address(), e.Origin.DeviceID, e.Origin.MutationID); err != nil || v > 0 {
		if err != nil {
			return nil, err
		}
		r := in.result(e, events.Accepted, "", "")
		r.Version = v
		return r, nil
	}
	ver, cur, err := in.pub.Latest(ctx, e.Address())
	if err != nil && ver == 0 {
		return nil, err
	}
	// With an error and a version, the latest change is there but does not
	// decode (stored by an older build): the record exists, its body is
	// not given.
	if err != nil {
		in.log.Warn("ingest: latest change unreadable", "record", e.Address(), "version", ver, "err", err)
	}
	r := in.result(e, events.Conflict, "", fmt.Sprintf("record is at version %d, the change was based on %d", ver, e.Origin.BaseVersion))
	r.ServerVersion = ver
	r.ServerDeleted = err == nil && (cur == nil || cur.Op == events.OpDelete)
	if cur != nil && cur.Op == events.OpUpsert {
		r.ServerBody = cur.Body
	}
	return r, nil
}

func (in *Ingester) result(e *events.Envelope, st events.ResultStatus, reason, msg string) *events.Result {
	return &events.Result{DeviceID: e.Origin.DeviceID, MutationID: e.Origin.MutationID, Status: st, Reason: reason,
		Message: msg, At: in.now().UnixMilli()}
}

// reject dead-letters an unusable upload and, when it names its device and
// mutation, answers it as rejected.
func (in *Ingester) reject(ctx context.Context, u *natsjs.Upload, dev, mut, reason string, why error) (*events.Result, error) {
	in.log.Warn("ingest: upload rejected", "subject", u.Subject, "seq", u.StreamSeq, "reason", reason, "err", why)
	if err := in.client.DeadLetter(ctx, reason, u, why); err != nil {
		return nil, err
	}
	if events.ValidToken(dev) != nil || events.ValidToken(mut) != nil {
		return nil, nil
	}
	return &events.Result{DeviceID: dev, MutationID: mut, Status: events.Rejected, Reason: reason, Message: why.Error(), At: in.now().UnixMilli()}, nil
}

// mutationFromMsgID extracts the mutation id from a "<device>.<mutation>"
// dedupe id, if it belongs to dev.
func mutationFromMsgID(dev, msgID string) string {
	d, m, ok := strings.Cut(msgID, ".")
	if !ok || d != dev {
		return ""
	}
	return m
}

func reasonFor(err error) string {
	switch {
	case errors.Is(err, events.ErrTooLarge):
		return events.ReasonTooLarge
	case errors.Is(err, events.ErrUnknownVersion):
		return events.ReasonIncompatible
	case errors.Is(err, events.ErrUnknownKind):
		return events.ReasonUnknownKind
	}
	return events.ReasonInvalid
}
