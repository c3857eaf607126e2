package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"

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

// decodeJSON decodes a request strictly: unknown fields are errors and
// integral numbers in bodies stay integers.
func decodeJSON(data []byte, r *Request) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(r); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	r.Body = normalise(r.Body).(map[string]any)
	return nil
}

// DecodeBody parses a JSON object as a record body, keeping integral
// numbers as integers (a plain json.Unmarshal would round large ones).
func DecodeBody(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("body: want a JSON object")
	}
	return normalise(m).(map[string]any), nil
}

// normalise turns json.Number into int64 where integral, float64 otherwise.
func normalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return x
		}
		for k, vv := range x {
			x[k] = normalise(vv)
		}
		return x
	case []any:
		for i, vv := range x {
			x[i] = normalise(vv)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		if math.IsInf(f, 0) {
			return x.String()
		}
		return f
	}
	return v
}
