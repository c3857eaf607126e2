package publish

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Client publishes changes through a broker's publish API over NATS.
type Client struct {
	nc *nats.Conn
}

// NewClient returns a client on connection nc.
func NewClient(nc *nats.Conn) *Client { return &Client{nc: nc} }

// Publish sends r and returns the response; a failed publish is returned
// as a *[Error] (test it with errors.Is against [ErrConflict] and friends).
func (c *Client) Publish(ctx context.Context, r Request) (Response, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return Response{}, fmt.Errorf("publish: encode request: %w", err)
	}
	msg, err := c.nc.RequestWithContext(ctx, Subject, data)
	if err != nil {
		return Response{}, fmt.Errorf("publish: request: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return Response{}, fmt.Errorf("publish: decode response: %w", err)
	}
	if resp.Error != nil {
		return resp, resp.Error
	}
	return resp, nil
}
