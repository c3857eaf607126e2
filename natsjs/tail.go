package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// TailSpec says which changes [Client.Tail] reads.
type TailSpec struct {
	// Unit is the org unit ("" the tenant-wide stream).
	Unit string
	// Channel narrows to one channel ("" every channel); Kind to one kind
	// of it ("" every kind; needs Channel).
	Channel events.Channel
	Kind    string
	// Since starts at the first change at or after this time; zero starts
	// with the changes appended from now on.
	Since time.Time
}

// Change is one change [Client.Tail] delivers: the envelope and the
// record version it made (its stream sequence), or the error that kept
// its bytes from decoding.
type Change struct {
	Subject  string
	Version  uint64
	Envelope *events.Envelope
	Err      error
}

// Filter returns the subject filter s reads, or why s is not valid.
func (s TailSpec) Filter() (string, error) {
	switch {
	case s.Kind != "" && s.Channel == "":
		return "", fmt.Errorf("%w: a kind needs its channel", events.ErrBadSubject)
	case s.Kind != "":
		return events.KindSubjects(s.Unit, s.Channel, s.Kind)
	case s.Channel != "":
		return events.ChannelFilter(s.Unit, s.Channel)
	}
	return events.OrgSubjects(s.Unit)
}

// Tail calls fn with each change spec selects, in stream order, until ctx
// ends (Tail then returns nil) or fn returns an error (returned). It reads
// through an ordered consumer: nothing is left on the server afterwards,
// and it costs no replicated asset.
func (c *Client) Tail(ctx context.Context, spec TailSpec, fn func(Change) error) error {
	stream, err := events.OrgStream(spec.Unit)
	if err != nil {
		return err
	}
	filter, err := spec.Filter()
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if !spec.Since.IsZero() {
		since := spec.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := c.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return unitErr(spec.Unit, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("natsjs: tail %s: %w", stream, err)
	}
	return iterate(ctx, msgs, func(m jetstream.Msg, err error) error {
		if err != nil {
			return fmt.Errorf("natsjs: tail %s: %w", stream, err)
		}
		ch := Change{Subject: m.Subject()}
		if md, err := m.Metadata(); err == nil {
			ch.Version = md.Sequence.Stream
		}
		ch.Envelope, ch.Err = events.Decode(m.Data())
		return fn(ch)
	})
}
