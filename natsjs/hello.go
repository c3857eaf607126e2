package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
)

// ServeHello answers version checks on [events.HelloSubject] with h until
// the subscription is drained (queue group, so every broker node answers).
func ServeHello(nc *nats.Conn, h events.Hello) (*nats.Subscription, error) {
	data, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	sub, err := nc.QueueSubscribe(events.HelloSubject, "fieldsync-hello", func(m *nats.Msg) { m.Respond(data) })
	if err != nil {
		return nil, fmt.Errorf("natsjs: serve hello: %w", err)
	}
	return sub, nil
}

// Hello sends the agent's hello and checks the broker's answer with
// [events.Compatible]. A broker that does not answer is too old for this
// agent ([events.ErrIncompatible]).
func (c *Client) Hello(ctx context.Context, mine events.Hello) (events.Hello, error) {
	data, _ := json.Marshal(mine)
	msg, err := c.nc.RequestWithContext(ctx, events.HelloSubject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return events.Hello{}, fmt.Errorf("%w: the server does not answer the version check: upgrade the server", events.ErrIncompatible)
	}
	if err != nil {
		return events.Hello{}, fmt.Errorf("natsjs: version check: %w", err)
	}
	theirs, err := events.ParseHello(msg.Data)
	if err != nil {
		return theirs, err
	}
	return theirs, events.Compatible(mine, theirs)
}
