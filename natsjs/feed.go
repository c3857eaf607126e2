package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// FeedReader reads one integration durable in stream order. Every change
// the server has delivered and the caller not taken yet is held here (the
// durable's MaxAckPending, [feedMaxAckPending], bounds them), so
// [FeedReader.KeepAlive] can keep them all from being delivered again
// while a slow handler works.
type FeedReader struct {
	it     jetstream.MessagesContext
	stream string
	done   chan struct{} // closed when the receiving goroutine ends

	mu    sync.Mutex
	held  []jetstream.Msg
	err   error         // why receiving ended
	ready chan struct{} // signalled when held grows or receiving ends
}

// feedMaxAckPending bounds the changes delivered to an integration and not
// yet acknowledged (about 150 KiB of typical changes): enough to keep the
// connection busy, few enough to keep in progress.
const feedMaxAckPending = 512

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
	// Pull requests of the client's default length (30 s): an idle
	// integration costs the broker one request per 30 s. The price: a
	// reader started again within that time of a stop may get the changes
	// appended meanwhile up to the ack wait later (the stopped reader's
	// request, still waiting on the server, took them).
	it, err := cons.Messages(jetstream.PullMaxBytes(ingestBufferBytes))
	if err != nil {
		return nil, fmt.Errorf("natsjs: feed %s on %s: %w", name, stream, err)
	}
	r := &FeedReader{it: it, stream: stream, done: make(chan struct{}), ready: make(chan struct{}, 1)}
	go r.receive()
	return r, nil
}

// receive moves every delivered change into held until the iterator ends.
func (r *FeedReader) receive() {
	defer close(r.done)
	for {
		m, err := r.it.Next()
		r.mu.Lock()
		if err != nil {
			r.err = err
		} else {
			r.held = append(r.held, m)
		}
		r.mu.Unlock()
		select {
		case r.ready <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

func (c *Client) createFeed(ctx context.Context, stream, name, filter string, spec FeedSpec) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: filter,
		AckWait: spec.AckWait, MaxDeliver: -1, MaxAckPending: feedMaxAckPending}
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
	for {
		r.mu.Lock()
		if len(r.held) > 0 {
			m := r.held[0]
			r.held = r.held[1:]
			r.mu.Unlock()
			return feedMsg(m), nil
		}
		err := r.err
		r.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("natsjs: feed %s: %w", r.stream, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.ready:
		}
	}
}

func feedMsg(m jetstream.Msg) *FeedMsg {
	fm := &FeedMsg{Subject: m.Subject(), msg: m}
	if md, err := m.Metadata(); err == nil {
		fm.Version, fm.Delivered, fm.Pending = md.Sequence.Stream, md.NumDelivered, md.NumPending
	}
	fm.Envelope, fm.DecodeErr = events.Decode(m.Data())
	return fm
}

// KeepAlive tells the server that every change delivered and not yet
// taken is still in progress (restarting their ack waits): a handler
// slower than the ack wait does not have the changes behind it sent again.
func (r *FeedReader) KeepAlive() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.held {
		m.InProgress()
	}
}

// Close stops reading. The changes delivered but not handed out are given
// back at once (Nak), so that the next reader of the durable gets them
// without waiting for the ack wait.
func (r *FeedReader) Close() {
	r.it.Drain() // receive takes what the client had buffered, then ends
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.held {
		m.Nak()
	}
	r.held = nil
}
