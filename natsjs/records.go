package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// Latest returns a record's current version and latest change (nil if the
// record never existed).
func (p *Publisher) Latest(ctx context.Context, a events.Address) (uint64, *events.Envelope, error) {
	subj, err := a.Subject()
	if err != nil {
		return 0, nil, err
	}
	name, _ := events.OrgStream(a.OrgUnit)
	s, err := p.js.Stream(ctx, name)
	if err != nil {
		return 0, nil, unitErr(a.OrgUnit, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("natsjs: latest of %s: %w", subj, err)
	}
	e, err := events.Decode(m.Data)
	if err != nil {
		return m.Sequence, nil, fmt.Errorf("natsjs: latest of %s: %w", subj, err)
	}
	return m.Sequence, e, nil
}

// FindMutation scans the history the stream keeps of a record for the
// change made by (device, mutation) and returns its version, or 0. An
// unknown org unit gives [ErrUnknownUnit]; a matching message whose
// position cannot be read is an error, not a miss.
func (p *Publisher) FindMutation(ctx context.Context, a events.Address, device, mutation string) (uint64, error) {
	subj, err := a.Subject()
	if err != nil {
		return 0, err
	}
	name, _ := events.OrgStream(a.OrgUnit)
	cons, err := p.js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return 0, unitErr(a.OrgUnit, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natsjs: scan %s: %w", subj, err)
	}
	if info.NumPending == 0 {
		return 0, nil
	}
	batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		return 0, fmt.Errorf("natsjs: scan %s: %w", subj, err)
	}
	found, err := mutationSeq(batch.Messages(), device, mutation)
	if err != nil {
		return 0, fmt.Errorf("natsjs: scan %s: %w", subj, err)
	}
	if err := batch.Error(); err != nil {
		return 0, fmt.Errorf("natsjs: scan %s: %w", subj, err)
	}
	return found, nil
}

// mutationSeq reads msgs to the end and returns the stream sequence of the
// last change made by (device, mutation), 0 if none. Messages that do not
// decode are not that change. A matching message without metadata is an
// error (the rest is still drained).
func mutationSeq(msgs <-chan jetstream.Msg, device, mutation string) (uint64, error) {
	var found uint64
	var errs []error
	for m := range msgs {
		e, err := events.Decode(m.Data())
		if err != nil || e.Origin.DeviceID != device || e.Origin.MutationID != mutation {
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			errs = append(errs, fmt.Errorf("mutation %s of %s: metadata: %w", mutation, device, err))
			continue
		}
		found = md.Sequence.Stream
	}
	if len(errs) > 0 {
		return 0, errors.Join(errs...)
	}
	return found, nil
}
