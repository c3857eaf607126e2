package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// ErrBadWrite wraps every refused local write, together with its cause
// (errors.Is matches both: an [events.ErrInvalidField], an
// [events.ErrTooLarge] body...).
var ErrBadWrite = errors.New("agent: bad write")

// WriteRequest is a local change the tablet app makes (POST /v1/records).
type WriteRequest struct {
	OrgUnit  string         `json:"org_unit"`
	Channel  string         `json:"channel"`
	Kind     string         `json:"kind"`
	RecordID string         `json:"id"`
	Op       string         `json:"op"` // upsert (default) or delete
	Body     map[string]any `json:"body,omitempty"`
}

// newMutationID returns a fresh mutation id (unique per device).
func newMutationID() string { return "m" + nuid.Next() }

// validWrite checks a write against the wire contract and the device's
// org units.
func (s *Syncer) validWrite(r WriteRequest) (store.Write, error) {
	if r.Op == "" {
		r.Op = string(events.OpUpsert)
	}
	w := store.Write{Addr: events.Address{OrgUnit: r.OrgUnit, Channel: events.Channel(r.Channel), Kind: r.Kind, RecordID: r.RecordID}, Op: events.Op(r.Op)}
	if err := w.Addr.Validate(); err != nil {
		return w, fmt.Errorf("%w: %w", ErrBadWrite, err)
	}
	if units := s.carried(); !slices.Contains(units, r.OrgUnit) {
		return w, fmt.Errorf("%w: org unit %q is not one of this device's (%v)", ErrBadWrite, r.OrgUnit, units)
	}
	if err := s.cfg.Kinds.Check(w.Addr.Channel, w.Addr.Kind); err != nil {
		return w, fmt.Errorf("%w: the kinds setting leaves %s records out: %w", ErrBadWrite, r.Kind, err)
	}
	switch {
	case w.Op == events.OpDelete && r.Body != nil:
		return w, fmt.Errorf("%w: a delete carries no body", ErrBadWrite)
	case w.Op == events.OpUpsert && r.Body == nil:
		return w, fmt.Errorf("%w: an upsert needs a body", ErrBadWrite)
	case !w.Op.Valid():
		return w, fmt.Errorf("%w: unknown op %q", ErrBadWrite, r.Op)
	}
	if r.Body != nil {
		b, err := marshalBody(r.Body)
		if err != nil {
			return w, fmt.Errorf("%w: body: %w", ErrBadWrite, err)
		}
		// What ingest would refuse is refused here, before it is queued.
		if err := events.ValidateBody(b); err != nil {
			return w, fmt.Errorf("%w: %w", ErrBadWrite, err)
		}
		w.Body = b
	}
	return w, nil
}

// Write applies a local change to the live view and queues it for upload.
func (s *Syncer) Write(ctx context.Context, r WriteRequest) (store.Mutation, error) {
	w, err := s.validWrite(r)
	if err != nil {
		return store.Mutation{}, err
	}
	return s.db.LocalWrite(ctx, w, newMutationID(), time.Now())
}

// ErrRevoked: the server revoked this device; it takes no more local
// writes (they could never be uploaded) until other credentials are
// configured.
var ErrRevoked = errors.New("agent: this device was revoked by the server")

// Write applies a local change to the live view, queues it, and wakes the
// autosync so it goes up at once while online. A revoked device refuses
// it ([ErrRevoked]).
func (a *Agent) Write(ctx context.Context, r WriteRequest) (store.Mutation, error) {
	a.mu.Lock()
	revoked := a.revoked != nil
	a.mu.Unlock()
	if revoked {
		return store.Mutation{}, ErrRevoked
	}
	s := a.currentSyncer()
	m, err := s.Write(ctx, r)
	if err == nil {
		kick(a.wake)
	}
	return m, err
}

// currentSyncer is the syncer of the running agent, or one that can queue
// writes locally before Run has connected.
func (a *Agent) currentSyncer() *Syncer {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.syncer == nil {
		s := NewSyncer(a.cfg, nil, a.db, a.log)
		s.orgUnits = a.OrgUnits
		return s
	}
	return a.syncer
}

// Upload publishes every queued write, oldest first, and marks each sent
// once the broker has stored it. A crash between the two re-sends it on
// the next run; ingest applies it once either way. It reads the queue a
// few writes at a time, so that at most about BatchBytes of bodies are in
// memory.
func (s *Syncer) Upload(ctx context.Context) (int, error) {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	page := min(max(s.cfg.BatchBytes/events.MaxBodySize, 1), 500)
	sent := 0
	for {
		queued, err := s.db.Queued(ctx, page)
		if err != nil || len(queued) == 0 {
			return sent, err
		}
		es := make([]*events.Envelope, len(queued))
		for i, m := range queued {
			s.trace("upload " + m.MutationID)
			es[i] = m.Envelope(s.cfg.DeviceID)
		}
		n, err := s.client.PublishUploads(ctx, es)
		ids := make([]string, n)
		for i, m := range queued[:n] {
			if s.beforeMarkSent != nil {
				s.beforeMarkSent(m)
			}
			ids[i] = m.MutationID
		}
		if n > 0 {
			if merr := s.db.MarkSentAll(ctx, ids, time.Now()); merr != nil {
				return sent, merr
			}
		}
		sent += n
		if err != nil {
			return sent, err
		}
	}
}

// Results catches up on the ingest results waiting for this device: it
// reads the device's results cursor from the results checkpoint until it
// has nothing more. While the agent is connected, results also arrive on
// the device's results subscription as ingest publishes them (autosync);
// this reads what was published while the device was offline.
func (s *Syncer) Results(ctx context.Context) (int, error) {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	after, err := s.db.ResultsCheckpoint(ctx)
	if err != nil {
		return 0, err
	}
	spec, err := natsjs.ResultsCursorSpec(s.cfg.DeviceID, after)
	if err != nil {
		return 0, err
	}
	spec.StallTimeout, spec.InactiveThreshold, spec.BatchBytes = s.cfg.StallTimeout, s.cfg.DurableInactive, s.cfg.BatchBytes
	cur, err := s.client.OpenCursor(ctx, spec)
	if err != nil {
		return 0, err
	}
	defer cur.Close()
	n := 0
	for !cur.CaughtUp() {
		ds, err := cur.Next(ctx, 500)
		s.downloaded(ds)
		if err != nil {
			return n, err
		}
		if len(ds) == 0 {
			continue
		}
		applied, err := s.applyResults(ctx, ds, ds[len(ds)-1].StreamSeq)
		n += applied
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// applyResults decodes ds and applies the results in one transaction,
// moving the results checkpoint to lastSeq (0 leaves it: results from the
// subscription carry no stream sequence). Unreadable results are logged
// and skipped. It returns how many results it applied.
func (s *Syncer) applyResults(ctx context.Context, ds []natsjs.Delivery, lastSeq uint64) (int, error) {
	b := store.ResultsBatch{LastSeq: lastSeq, RetainEvents: s.cfg.RetainEvents(), Now: time.Now()}
	for _, d := range ds {
		r, err := events.DecodeResult(d.Data)
		if err != nil {
			s.log.Warn("unreadable ingest result skipped", "subject", d.Subject, "seq", d.StreamSeq, "err", err)
			continue
		}
		b.Results = append(b.Results, r)
	}
	if len(b.Results) == 0 && lastSeq == 0 {
		return 0, nil
	}
	decided, err := s.db.ApplyResults(ctx, b)
	if err != nil {
		return 0, err
	}
	if s.onDecided != nil {
		s.onDecided(decided)
	}
	return len(b.Results), nil
}

func (s *Syncer) trace(op string) {
	if s.onTrace != nil {
		s.onTrace(op)
	}
}

func marshalBody(m map[string]any) ([]byte, error) { return msgpack.Marshal(m) }
