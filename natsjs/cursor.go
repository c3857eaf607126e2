package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// CursorSpec says which changes a device reads and from where.
type CursorSpec struct {
	// Unit and Channel select the stream and subject filter; an empty Unit is
	// the tenant-wide admin data.
	Unit    string
	Channel events.Channel
	// Stream and Filter, when set, override the stream and subject filter
	// derived from Unit and Channel (e.g. a device's ingest results).
	Stream string
	Filter string
	// Durable is the consumer name, unique per (device, unit, channel); see
	// [DurableName].
	Durable string
	// After is the device's checkpoint: the last stream sequence it applied.
	// The local checkpoint is the truth; a durable whose position differs is
	// re-created from it.
	After uint64
	// Snapshot asks for the latest version of each record only (initial
	// sync). Messages at or below After are skipped, so a snapshot
	// interrupted and re-created never applies anything twice.
	Snapshot bool
	// InactiveThreshold: the broker deletes the durable after this long
	// without a device pulling from it. Default [DefaultInactiveThreshold].
	InactiveThreshold time.Duration
	// StallTimeout fails a read that makes no progress while changes are
	// pending. Default 30 s.
	StallTimeout time.Duration
	// BufferBytes bounds the messages the client keeps prefetched, in bytes
	// (default [DefaultBufferBytes]). It must exceed the largest message
	// ([events.MaxMessageSize]); a smaller value is raised to that.
	BufferBytes int
	// BatchBytes bounds one [Cursor.Next] batch by the bytes of its data
	// (default [DefaultBatchBytes]); a batch has at least one message
	// whatever its size.
	BatchBytes int
}

// Defaults of [CursorSpec]: what a device holds in memory per cursor is
// bounded by bytes, not by message counts, so 256 KiB documents cost no
// more than small events.
const (
	DefaultBufferBytes = 8 << 20
	DefaultBatchBytes  = 4 << 20
)

// DefaultInactiveThreshold is how long an unused device durable stays on
// the broker; a durable removed earlier is re-created from the local
// checkpoint by the device's next sync.
const DefaultInactiveThreshold = 7 * 24 * time.Hour

// DurableName returns the durable consumer name for a device's channel.
// The unit is implied by the stream the consumer lives in.
func DurableName(device string, ch events.Channel) (string, error) {
	if err := events.ValidToken(device); err != nil {
		return "", err
	}
	if !ch.Valid() {
		return "", fmt.Errorf("natsjs: unknown channel %q", ch)
	}
	return "fsdev_" + device + "_" + string(ch), nil
}

// ResultsCursorSpec returns the spec of a device's cursor over its ingest
// results, from the device's results checkpoint.
func ResultsCursorSpec(device string, after uint64) (CursorSpec, error) {
	filter, err := events.DeviceResultSubjects(device)
	if err != nil {
		return CursorSpec{}, err
	}
	durable, _ := ResultsDurableName(device)
	return CursorSpec{Stream: events.ResultStream, Filter: filter, Durable: durable, After: after}, nil
}

// ResultsDurableName returns the name of device's durable on the results
// stream. Like [DurableName] it is fixed per device, so the broker's
// permissions can name exactly the consumers a device may use.
func ResultsDurableName(device string) (string, error) {
	if err := events.ValidToken(device); err != nil {
		return "", err
	}
	return "fsres_" + device, nil
}

// IntegrationDurableName returns the durable consumer name an integration
// (a backend reading changes) uses for one channel of a unit's stream.
func IntegrationDurableName(name string, ch events.Channel) (string, error) {
	if err := events.ValidToken(name); err != nil {
		return "", err
	}
	if !ch.Valid() {
		return "", fmt.Errorf("natsjs: unknown channel %q", ch)
	}
	return "fsint_" + name + "_" + string(ch), nil
}

// Delivery is one message read from a unit stream.
type Delivery struct {
	Subject   string
	Data      []byte
	StreamSeq uint64
	// Pending is how many matching messages remained after this one when it
	// was delivered.
	Pending uint64
}

// Cursor reads one (unit, channel) of a device through its durable.
type Cursor struct {
	spec     CursorSpec
	cons     jetstream.Consumer
	it       jetstream.MessagesContext
	pending  uint64
	caughtUp bool
	// last is the stream sequence of the newest matching message when the
	// cursor opened: the cursor is caught up only once it has delivered
	// that far, whatever the consumer's pending count says.
	last uint64
	// delivered is the consumer sequence of the last message read: the
	// next must follow it, or some were lost in flight.
	delivered uint64
	// Recreated reports whether the durable was (re)created for this cursor
	// rather than resumed.
	Recreated bool
}

// openCursor binds to the durable of spec, re-creating it from spec.After
// when it is missing or its position differs from the device's checkpoint.
func openCursor(ctx context.Context, js jetstream.JetStream, spec CursorSpec) (*Cursor, error) {
	spec = spec.withDefaults()
	stream, err := spec.stream()
	if err != nil {
		return nil, err
	}
	c := &Cursor{spec: spec}
	// Right after a node was lost the stream or the durable may have no
	// leader for a few seconds: wait for one within the stall timeout.
	var noStream bool
	s, err := retryTransient(ctx, spec.StallTimeout, func() (s jetstream.Stream, err error) {
		defer func() {
			if err != nil && denied(js.Conn(), stream) {
				err = backoff.Permanent(err)
			}
		}()
		s, err = js.Stream(ctx, stream)
		if noStream = err != nil; noStream {
			return nil, err
		}
		if c.cons, c.Recreated, err = bindDurable(ctx, s, spec); err != nil {
			return nil, err
		}
		c.last, err = lastSeq(ctx, s, spec)
		return s, err
	})
	if err != nil && noStream {
		return nil, unitErr(spec.Unit, err)
	}
	if err != nil {
		return nil, err
	}
	info := c.cons.CachedInfo()
	c.pending, c.caughtUp = info.NumPending, c.last <= spec.After
	c.delivered = info.Delivered.Consumer
	if c.pending == 0 && !c.caughtUp {
		c.pending = 1 // the broker has not counted it yet
	}
	c.it, err = c.cons.Messages(prefetch(ctx, s, spec, c.pending))
	if err != nil {
		return nil, fmt.Errorf("natsjs: read %s: %w", spec.Durable, err)
	}
	return c, nil
}

// maxSnapshotPrefetch caps the messages a snapshot cursor prefetches.
const maxSnapshotPrefetch = 2000

// prefetch says how much the client reads ahead of [Cursor.Next]: at most
// about spec.BufferBytes. A delta cursor asks the broker for that many
// bytes (PullMaxBytes). A snapshot cursor must not: nats-server (2.15)
// drops a DeliverLastPerSubject message that does not fit the bytes left
// in a pull request, never delivering it, and the device would skip that
// record for good. It asks for a number of messages instead, sized from
// the larger of the stream's average message and the channel's latest one.
func prefetch(ctx context.Context, s jetstream.Stream, spec CursorSpec, pending uint64) jetstream.PullMessagesOpt {
	if !spec.Snapshot {
		return jetstream.PullMaxBytes(spec.BufferBytes)
	}
	size := 1
	if st := s.CachedInfo().State; st.Msgs > 0 {
		size = int(st.Bytes / st.Msgs)
	}
	if filter, err := spec.filter(); err == nil && pending > 0 {
		if m, err := s.GetLastMsgForSubject(ctx, filter); err == nil {
			size = max(size, len(m.Subject)+len(m.Data)+messageOverhead)
		}
	}
	return jetstream.PullMaxMessages(min(max(spec.BufferBytes/size, 1), maxSnapshotPrefetch))
}

// messageOverhead is about what a delivered message costs besides its
// subject and data (headers, reply subject).
const messageOverhead = 256

// lastSeq returns the stream sequence of the newest message matching
// spec (0 when there is none). The broker updates a consumer's pending
// count a moment after a publish is acknowledged; a cursor that trusted
// that count alone could call itself caught up in that gap and skip an
// acknowledged change until its next run.
func lastSeq(ctx context.Context, s jetstream.Stream, spec CursorSpec) (uint64, error) {
	filter, err := spec.filter()
	if err != nil {
		return 0, err
	}
	m, err := s.GetLastMsgForSubject(ctx, filter)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("natsjs: last message of %s: %w", filter, err)
	}
	return m.Sequence, nil
}

func (s CursorSpec) withDefaults() CursorSpec {
	if s.InactiveThreshold == 0 {
		s.InactiveThreshold = DefaultInactiveThreshold
	}
	if s.StallTimeout == 0 {
		s.StallTimeout = 30 * time.Second
	}
	if s.BufferBytes == 0 {
		s.BufferBytes = DefaultBufferBytes
	}
	// A pull asks for at most half the buffer: it must fit one message.
	s.BufferBytes = max(s.BufferBytes, 2*(events.MaxMessageSize+4096))
	if s.BatchBytes <= 0 {
		s.BatchBytes = DefaultBatchBytes
	}
	return s
}

func (s CursorSpec) stream() (string, error) {
	if s.Stream != "" {
		return s.Stream, nil
	}
	return events.OrgStream(s.Unit)
}

func (s CursorSpec) filter() (string, error) {
	if s.Filter != "" {
		return s.Filter, nil
	}
	return events.ChannelFilter(s.Unit, s.Channel)
}

func bindDurable(ctx context.Context, s jetstream.Stream, spec CursorSpec) (jetstream.Consumer, bool, error) {
	filter, err := spec.filter()
	if err != nil {
		return nil, false, err
	}
	cons, err := s.Consumer(ctx, spec.Durable)
	switch {
	case err == nil:
		info := cons.CachedInfo()
		// Reused only with no pull request of an earlier reader still
		// waiting on it: the broker would hand the next change to that
		// closed reader's inbox, and this cursor would stall on it.
		if info.Config.FilterSubject == filter && info.Delivered.Stream == spec.After && info.NumAckPending == 0 && info.NumWaiting == 0 {
			return cons, false, nil
		}
		if err := s.DeleteConsumer(ctx, spec.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, false, fmt.Errorf("natsjs: replace durable %s: %w", spec.Durable, err)
		}
	case transient(ctx, err) || offline(err):
		// No answer from the durable, or "offline", while the stream
		// answered: the nodes holding it are down or electing. The meta
		// leader can still remove it; the new one is placed on live nodes
		// and starts from the checkpoint.
		if err := s.DeleteConsumer(ctx, spec.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, false, fmt.Errorf("natsjs: replace unreachable durable %s: %w", spec.Durable, err)
		}
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, false, fmt.Errorf("natsjs: durable %s: %w", spec.Durable, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:           spec.Durable,
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: spec.InactiveThreshold,
		ReplayPolicy:      jetstream.ReplayInstantPolicy,
		// The stream's replicas and file storage. One replica in memory
		// would make a fleet's durables no Raft groups (fsbench consumers),
		// but lost a record once in TestCluster_SyncSurvivesNodeLoss: not
		// adopted until that is explained (README, device consumers for
		// fleets).
	}
	if spec.Snapshot {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	} else if spec.After > 0 {
		if err := checkFirstSeq(ctx, s, spec.After); err != nil {
			return nil, false, err
		}
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = spec.After + 1
	}
	cons, err = createReplaced(ctx, s, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("natsjs: create durable %s: %w", spec.Durable, err)
	}
	return cons, true, nil
}

// createReplaced creates the durable cfg describes. Right after the old
// one of the same name was deleted, nats-server 2.15.2 may still be
// removing its files and answer a create with an internal error (code
// 500, "rename …/o.dat.tmp …: no such file or directory"): that is tried
// again a few times, shortly, before it is returned.
func createReplaced(ctx context.Context, s jetstream.Stream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	for attempt := 1; ; attempt++ {
		cons, err := s.CreateOrUpdateConsumer(ctx, cfg)
		var apiErr *jetstream.APIError
		if err == nil || attempt == 5 || !errors.As(err, &apiErr) || apiErr.Code != 500 {
			return cons, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
		}
	}
}

func checkFirstSeq(ctx context.Context, s jetstream.Stream, after uint64) error {
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("natsjs: stream info: %w", err)
	}
	if st := info.State; after+1 < st.FirstSeq {
		return fmt.Errorf("%w: checkpoint %d, stream starts at %d", ErrCheckpointTooOld, after, st.FirstSeq)
	}
	return nil
}

// Pending is the number of changes the broker had for this cursor when it
// was opened.
func (c *Cursor) Pending() uint64 { return c.pending }

// CaughtUp reports whether the cursor has delivered everything that was
// pending (the last delivery said nothing remained).
func (c *Cursor) CaughtUp() bool { return c.caughtUp }

// Next returns up to max deliveries and up to the spec's BatchBytes of
// data: it waits for the first one (up to the stall timeout) and then takes
// whatever else is already buffered. It returns an empty batch once the
// cursor is caught up.
func (c *Cursor) Next(ctx context.Context, max int) ([]Delivery, error) {
	var out []Delivery
	size := 0
	for len(out) < max && size < c.spec.BatchBytes && !c.caughtUp {
		msg, err := c.next(ctx, len(out) == 0)
		if err != nil {
			if len(out) > 0 && errors.Is(err, nats.ErrTimeout) {
				return out, nil
			}
			return out, err
		}
		md, err := msg.Metadata()
		if err != nil {
			return out, fmt.Errorf("natsjs: message metadata: %w", err)
		}
		if md.Sequence.Consumer != c.delivered+1 {
			return out, fmt.Errorf("%w: %s: delivery %d after %d", ErrDeliveryGap, c.spec.Durable, md.Sequence.Consumer, c.delivered)
		}
		c.delivered = md.Sequence.Consumer
		c.caughtUp = md.NumPending == 0 && md.Sequence.Stream >= c.last
		if md.Sequence.Stream <= c.spec.After {
			continue // already applied before the durable was re-created
		}
		out = append(out, Delivery{Subject: msg.Subject(), Data: msg.Data(), StreamSeq: md.Sequence.Stream, Pending: md.NumPending})
		size += len(msg.Data())
	}
	return out, nil
}

// next waits for one message: up to the stall timeout for the first of a
// batch, a millisecond for the rest (they are normally buffered already).
func (c *Cursor) next(ctx context.Context, first bool) (jetstream.Msg, error) {
	if !first {
		return c.it.Next(jetstream.NextMaxWait(time.Millisecond))
	}
	wctx, cancel := context.WithTimeout(ctx, c.spec.StallTimeout)
	defer cancel()
	msg, err := c.it.Next(jetstream.NextContext(wctx))
	switch {
	case err == nil:
		return msg, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, jetstream.ErrNoHeartbeat):
		return nil, fmt.Errorf("%w: %s: nothing for %s with %d pending", ErrStalled, c.spec.Durable, c.spec.StallTimeout, c.pending)
	default:
		return nil, fmt.Errorf("natsjs: read %s: %w", c.spec.Durable, err)
	}
}

// Close stops reading. Prefetched but unreturned messages are dropped; the
// durable's position then differs from the checkpoint and the next
// [Client.OpenCursor] re-creates it from there.
func (c *Cursor) Close() {
	if c.it != nil {
		c.it.Stop()
	}
}
