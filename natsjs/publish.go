package natsjs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// Publisher appends changes to the org unit streams.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a publisher writing through js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// PublishOptions tune one [Publisher.Publish].
type PublishOptions struct {
	// ExpectedVersion, when set, is the record version (stream sequence of
	// its latest change) the change was based on; 0 means "the record must
	// not exist yet". A mismatch fails with a *[ConflictError].
	ExpectedVersion *uint64
}

// Ack says where a change landed.
type Ack struct {
	Stream string
	// Version is the stream sequence of the change: the record's new version.
	Version uint64
	// Duplicate is true when the event id was already published within the
	// stream's duplicate window; Version is then the original's.
	Duplicate bool
}

// Publish validates, encodes and appends e on its subject, with e.EventID as
// the dedupe id.
func (p *Publisher) Publish(ctx context.Context, e *events.Envelope, o PublishOptions) (Ack, error) {
	subj, err := e.Subject()
	if err != nil {
		return Ack{}, err
	}
	data, err := events.Encode(e)
	if err != nil {
		return Ack{}, err
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(e.EventID)}
	if o.ExpectedVersion != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*o.ExpectedVersion))
	}
	pa, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: data}, opts...)
	if err != nil {
		return Ack{}, p.publishErr(ctx, e, subj, o, err)
	}
	return Ack{Stream: pa.Stream, Version: pa.Sequence, Duplicate: pa.Duplicate}, nil
}

func (p *Publisher) publishErr(ctx context.Context, e *events.Envelope, subj string, o PublishOptions, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		cur, cerr := p.Version(ctx, e.Address())
		if cerr != nil {
			return fmt.Errorf("natsjs: conflict on %s, reading current version: %w", subj, cerr)
		}
		return &ConflictError{Subject: subj, Expected: *o.ExpectedVersion, Current: cur}
	}
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		return fmt.Errorf("%w: %q (no stream for %s)", ErrUnknownUnit, e.OrgUnit, subj)
	}
	return fmt.Errorf("natsjs: publish %s: %w", subj, err)
}

// Version returns the current version of a record: the stream sequence of
// its latest change, or 0 if it has none.
func (p *Publisher) Version(ctx context.Context, a events.Address) (uint64, error) {
	subj, err := a.Subject()
	if err != nil {
		return 0, err
	}
	name, _ := events.OrgStream(a.OrgUnit)
	s, err := p.js.Stream(ctx, name)
	if err != nil {
		return 0, unitErr(a.OrgUnit, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("natsjs: version of %s: %w", subj, err)
	}
	return m.Sequence, nil
}

// PublishRaw appends data on subject as is, without validation. It exists
// for operators re-publishing dead letters and for tests that must put bad
// bytes in a stream; backends use [Publisher.Publish].
func (p *Publisher) PublishRaw(ctx context.Context, subject string, data []byte) (uint64, error) {
	pa, err := p.js.Publish(ctx, subject, data)
	if err != nil {
		return 0, fmt.Errorf("natsjs: publish raw %s: %w", subject, err)
	}
	return pa.Sequence, nil
}

// PublishAll appends the envelopes next yields, keeping up to window
// publishes in flight, and waits for every acknowledgement. It is for
// seeding and bulk imports: no per-record concurrency check. It returns how
// many were acknowledged.
func (p *Publisher) PublishAll(ctx context.Context, next func() (*events.Envelope, bool), window int) (int, error) {
	var encErr error
	n, err := p.PublishAllRaw(ctx, func() (string, []byte, string, bool) {
		e, ok := next()
		if !ok {
			return "", nil, "", false
		}
		subj, err := e.Subject()
		if err != nil {
			encErr = err
			return "", nil, "", false
		}
		data, err := events.Encode(e)
		if err != nil {
			encErr = err
			return "", nil, "", false
		}
		return subj, data, e.EventID, true
	}, window)
	if encErr != nil {
		return n, encErr
	}
	return n, err
}

// PublishAllRaw is [Publisher.PublishAll] for pre-encoded messages: next
// yields subject, data and dedupe id.
func (p *Publisher) PublishAllRaw(ctx context.Context, next func() (string, []byte, string, bool), window int) (int, error) {
	if window <= 0 {
		window = 2000
	}
	var futures []jetstream.PubAckFuture
	done := 0
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
				done++
			case err := <-f.Err():
				return fmt.Errorf("natsjs: publish %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	for subj, data, id, ok := next(); ok; subj, data, id, ok = next() {
		f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: subj, Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}})
		if err != nil {
			return done, fmt.Errorf("natsjs: publish %s: %w", subj, err)
		}
		if futures = append(futures, f); len(futures) >= window {
			if err := wait(); err != nil {
				return done, err
			}
		}
	}
	return done, wait()
}
