package natsjs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// Follow reads the changes on filters in the org stream of unit ("" the
// tenant-wide stream): the latest version of each subject first, then new
// ones as they are appended, calling fn for each in stream order until ctx
// ends (Follow then returns nil). caughtUp is called once, when fn has seen
// every change the stream held when Follow started. It uses an ordered
// consumer (R1, in memory, recreated by the client on gaps), so following
// costs the cluster no replicated asset. A change that does not decode is
// passed to bad and skipped.
func (c *Client) Follow(ctx context.Context, unit string, filters []string, fn func(*events.Envelope), caughtUp func(), bad func(error)) error {
	stream, err := events.OrgStream(unit)
	if err != nil {
		return err
	}
	cons, err := c.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy})
	if err != nil {
		return unitErr(unit, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return unitErr(unit, err)
	}
	once := false
	done := func() {
		if !once {
			once = true
			caughtUp()
		}
	}
	if info.NumPending == 0 {
		done()
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("natsjs: follow %s: %w", stream, err)
	}
	return iterate(ctx, msgs, func(m jetstream.Msg, err error) error {
		if err != nil {
			bad(fmt.Errorf("natsjs: follow %s: %w", stream, err))
			return nil
		}
		if e, err := events.Decode(m.Data()); err != nil {
			bad(fmt.Errorf("natsjs: follow %s: %s: %w", stream, m.Subject(), err))
		} else {
			fn(e)
		}
		if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
			done()
		}
		return nil
	})
}

// iterate calls fn with each message of msgs, or with the error reading
// it, until ctx ends or msgs is stopped (iterate then returns nil) or fn
// returns an error (returned, msgs stopped).
func iterate(ctx context.Context, msgs jetstream.MessagesContext, fn func(jetstream.Msg, error) error) error {
	go func() { <-ctx.Done(); msgs.Stop() }()
	for {
		m, err := msgs.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
			return nil
		}
		if err := fn(m, err); err != nil {
			msgs.Stop()
			return err
		}
	}
}

// DeleteDeviceConsumers deletes device's consumers on the stream of unit
// (one per channel); consumers that do not exist are no error.
func (c *Client) DeleteDeviceConsumers(ctx context.Context, device, unit string) error {
	var errs []error
	for _, ch := range events.Channels {
		name, err := DurableName(device, ch)
		if err != nil {
			return err
		}
		if err := deleteDurable(ctx, c.js, unit, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
