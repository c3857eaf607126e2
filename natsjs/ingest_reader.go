package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// Upload is one device upload read by ingest. Ack it once its result is
// recorded; until then it is redelivered.
type Upload struct {
	Subject   string
	Data      []byte
	StreamSeq uint64
	// Delivered counts deliveries of this message (1 the first time).
	Delivered uint64
	// MsgID is the upload's dedupe id, "<device>.<mutation>" when a device
	// agent sent it; it names the mutation even when Data is unreadable.
	MsgID string
	msg   jetstream.Msg
}

// Ack confirms the upload is fully handled.
func (u *Upload) Ack() error { return u.msg.Ack() }

// Nak asks for redelivery after delay.
func (u *Upload) Nak(delay time.Duration) error { return u.msg.NakWithDelay(delay) }

// IngestReader reads the uploads stream through the shared durable
// [IngestDurable]: every broker node may run one, JetStream hands each
// upload to one of them.
type IngestReader struct {
	it jetstream.MessagesContext
}

// OpenIngest binds to (creating if needed) the shared ingest durable.
func (c *Client) OpenIngest(ctx context.Context, p IngestPolicy) (*IngestReader, error) {
	ackWait := p.withDefaults().AckWait
	cons, err := c.js.CreateOrUpdateConsumer(ctx, events.UploadStream, jetstream.ConsumerConfig{
		Durable: IngestDurable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: 20000, MaxDeliver: -1, FilterSubject: events.UploadSubjects(),
	})
	if err != nil {
		return nil, fmt.Errorf("natsjs: ingest durable: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2000))
	if err != nil {
		return nil, fmt.Errorf("natsjs: ingest read: %w", err)
	}
	return &IngestReader{it: it}, nil
}

// Next waits for at least one upload (or ctx) and returns up to max.
func (r *IngestReader) Next(ctx context.Context, max int) ([]*Upload, error) {
	var out []*Upload
	for len(out) < max {
		var msg jetstream.Msg
		var err error
		if len(out) == 0 {
			msg, err = r.it.Next(jetstream.NextContext(ctx))
		} else {
			msg, err = r.it.Next(jetstream.NextMaxWait(time.Millisecond))
		}
		if err != nil {
			if len(out) > 0 && errors.Is(err, nats.ErrTimeout) {
				return out, nil
			}
			return out, err
		}
		md, err := msg.Metadata()
		if err != nil {
			msg.Term()
			continue
		}
		out = append(out, &Upload{Subject: msg.Subject(), Data: msg.Data(), StreamSeq: md.Sequence.Stream, Delivered: md.NumDelivered,
			MsgID: msg.Headers().Get(jetstream.MsgIDHeader), msg: msg})
	}
	return out, nil
}

// Close stops reading; unacknowledged uploads are redelivered later.
func (r *IngestReader) Close() { r.it.Stop() }

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

// IngestPending returns how many uploads wait for ingest: not yet
// delivered plus delivered but not acknowledged (the ingest lag).
func (c *Client) IngestPending(ctx context.Context) (uint64, error) {
	cons, err := c.js.Consumer(ctx, events.UploadStream, IngestDurable)
	if err != nil {
		return 0, fmt.Errorf("natsjs: ingest durable: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natsjs: ingest durable: %w", err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}
