package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// FeedStart says where a new integration durable starts (see
// docs/change-feed.md, "Where to start"). An existing durable continues
// after its last acknowledgement whatever the start.
type FeedStart struct {
	// Time, when set, starts at the first change at or after it.
	Time time.Time
	// Sequence, when set (and Time is not), starts at that stream sequence.
	Sequence uint64
	// Now starts with the changes appended from now on. With nothing set
	// the durable starts at the beginning of the stream.
	Now bool
}

// FeedSpec names an integration's durable on one (unit, channel).
type FeedSpec struct {
	// Integration is the integration's name: the durable is
	// [IntegrationDurableName](Integration, Channel), the only one its
	// credentials may use.
	Integration string
	Unit        string // "" the tenant-wide stream
	Channel     events.Channel
	Start       FeedStart
	// AckWait is how long a delivered change may stay unacknowledged
	// before it is sent again (default 5 s); [FeedMsg.InProgress] extends
	// it.
	AckWait time.Duration
}

// DefaultFeedAckWait is an integration durable's ack wait unless
// [FeedSpec.AckWait] says otherwise.
const DefaultFeedAckWait = 5 * time.Second

// FeedReader reads one integration durable in stream order.
type FeedReader struct {
	it     jetstream.MessagesContext
	stream string
}

// FeedMsg is one change delivered to an integration. Acknowledge it once
// processed; until then it is delivered again after the ack wait.
type FeedMsg struct {
	Subject string
	// Version is the record version the change made: its stream sequence.
	Version uint64
	// Delivered counts deliveries (1 the first time).
	Delivered uint64
	// Pending is how many changes of the durable's filter follow this one:
	// the integration's lag, in changes.
	Pending uint64
	// Envelope is the change; DecodeErr says why it is nil.
	Envelope  *events.Envelope
	DecodeErr error
	msg       jetstream.Msg
}

// Ack acknowledges m (the durable moves past it).
func (m *FeedMsg) Ack() error { return m.msg.Ack() }

// InProgress tells the server m is still being worked on, restarting its
// ack wait.
func (m *FeedMsg) InProgress() error { return m.msg.InProgress() }

// Nak gives m back unhandled: it is delivered again at once.
func (m *FeedMsg) Nak() error { return m.msg.Nak() }

// Term stops m's redelivery for good (a dead-lettered change).
func (m *FeedMsg) Term() error { return m.msg.Term() }

// OpenFeed binds to spec's durable, creating it at spec.Start when it does
// not exist yet.
func (c *Client) OpenFeed(ctx context.Context, spec FeedSpec) (*FeedReader, error) {
	stream, err := events.OrgStream(spec.Unit)
	if err != nil {
		return nil, err
	}
	name, err := IntegrationDurableName(spec.Integration, spec.Channel)
	if err != nil {
		return nil, err
	}
	filter, err := events.ChannelFilter(spec.Unit, spec.Channel)
	if err != nil {
		return nil, err
	}
	cons, err := c.js.Consumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = c.createFeed(ctx, stream, name, filter, spec)
	}
	if err != nil {
		return nil, fmt.Errorf("natsjs: feed %s on %s: %w", name, stream, unitErr(spec.Unit, err))
	}
	// Short pull requests: a stopped reader's request, still waiting on the
	// server, could take new changes that then wait for the ack wait.
	it, err := cons.Messages(jetstream.PullMaxBytes(ingestBufferBytes), jetstream.PullExpiry(time.Second))
	if err != nil {
		return nil, fmt.Errorf("natsjs: feed %s on %s: %w", name, stream, err)
	}
	return &FeedReader{it: it, stream: stream}, nil
}

func (c *Client) createFeed(ctx context.Context, stream, name, filter string, spec FeedSpec) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: filter,
		AckWait: spec.AckWait, MaxDeliver: -1, MaxAckPending: 1000}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultFeedAckWait
	}
	switch s := spec.Start; {
	case !s.Time.IsZero():
		t := s.Time
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	case s.Sequence > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, s.Sequence
	case s.Now:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	return c.js.CreateConsumer(ctx, stream, cfg)
}

// Next waits for the next change (or ctx).
func (r *FeedReader) Next(ctx context.Context) (*FeedMsg, error) {
	m, err := r.it.Next(jetstream.NextContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("natsjs: feed %s: %w", r.stream, err)
	}
	fm := &FeedMsg{Subject: m.Subject(), msg: m}
	if md, err := m.Metadata(); err == nil {
		fm.Version, fm.Delivered, fm.Pending = md.Sequence.Stream, md.NumDelivered, md.NumPending
	}
	fm.Envelope, fm.DecodeErr = events.Decode(m.Data())
	return fm, nil
}

// Close stops reading. The changes the client had prefetched but not
// handed out are given back at once (Nak), so that the next reader of the
// durable gets them without waiting for the ack wait.
func (r *FeedReader) Close() {
	r.it.Drain()
	for {
		m, err := r.it.Next(jetstream.NextMaxWait(100 * time.Millisecond))
		if err != nil {
			return
		}
		m.Nak()
	}
}
