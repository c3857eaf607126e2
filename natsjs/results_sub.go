package natsjs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
)

// ErrResultsDropped: the client dropped results of a [ResultsSub] because
// more were waiting than its pending limit allows. Read the device's
// results cursor ([ResultsCursorSpec]) to catch up.
var ErrResultsDropped = errors.New("natsjs: results dropped by a slow reader")

// DefaultResultsPending bounds the bytes of results a [ResultsSub] holds
// before they are read.
const DefaultResultsPending = 8 << 20

// ResultsSub receives a device's ingest results the moment ingest
// publishes them: a plain NATS subscription on the device's result subjects
// ([events.DeviceResultSubjects]). It makes no JetStream API call, so an
// idle device costs the broker nothing but the connection's heartbeats.
//
// It only sees results published while it is subscribed: after the device
// was offline (or on [ErrResultsDropped]) read the results cursor
// ([ResultsCursorSpec]), which starts from the device's results
// checkpoint. The subscription survives reconnects (the client renews it
// before it reports the reconnect), so a catch-up started on reconnect
// leaves no gap.
type ResultsSub struct {
	sub     *nats.Subscription
	dropped int
}

// SubscribeResults subscribes to device's results, holding at most
// pendingBytes of them unread (default [DefaultResultsPending]); results
// beyond are dropped and reported by [ResultsSub.Next].
func (c *Client) SubscribeResults(device string, pendingBytes int) (*ResultsSub, error) {
	subj, err := events.DeviceResultSubjects(device)
	if err != nil {
		return nil, err
	}
	if pendingBytes <= 0 {
		pendingBytes = DefaultResultsPending
	}
	sub, err := c.nc.SubscribeSync(subj)
	if err != nil {
		return nil, fmt.Errorf("natsjs: subscribe %s: %w", subj, err)
	}
	if err := sub.SetPendingLimits(-1, pendingBytes); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("natsjs: subscribe %s: %w", subj, err)
	}
	return &ResultsSub{sub: sub}, nil
}

// Next waits for the next result and returns it with the others already
// received, up to maxBytes of data (always at least one). The deliveries
// carry no stream sequence (StreamSeq is 0): only a results cursor moves
// the results checkpoint. Next returns what it read with an error wrapping
// [ErrResultsDropped] when results were dropped since the last call.
func (s *ResultsSub) Next(ctx context.Context, maxBytes int) ([]Delivery, error) {
	msg, err := s.sub.NextMsgWithContext(ctx)
	switch {
	case errors.Is(err, nats.ErrSlowConsumer):
		return nil, s.dropErr()
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, fmt.Errorf("natsjs: results: %w", err)
	}
	out := []Delivery{{Subject: msg.Subject, Data: msg.Data}}
	for size := len(msg.Data); size < maxBytes; size += len(msg.Data) {
		if n, _, _ := s.sub.Pending(); n == 0 {
			break
		}
		if msg, err = s.sub.NextMsg(0); errors.Is(err, nats.ErrSlowConsumer) {
			return out, s.dropErr()
		} else if err != nil {
			break
		}
		out = append(out, Delivery{Subject: msg.Subject, Data: msg.Data})
	}
	if d, _ := s.sub.Dropped(); d > s.dropped {
		return out, s.dropErr()
	}
	return out, nil
}

// dropErr reports the results dropped since the last report.
func (s *ResultsSub) dropErr() error {
	d, _ := s.sub.Dropped()
	n := d - s.dropped
	s.dropped = d
	return fmt.Errorf("%w: %d since the last read", ErrResultsDropped, n)
}

// Close ends the subscription.
func (s *ResultsSub) Close() error {
	if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("natsjs: results unsubscribe: %w", err)
	}
	return nil
}
