package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/natsjs"
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
	return c.request(ctx, Subject, r)
}

// PublishDocument publishes one version of a document: it puts content
// (unless nil) into the unit's bucket itself, through JetStream
// ([natsjs.Publisher.PutContent]), then asks the service on
// [DocumentSubject] to publish the record naming it (r.Object). With nil
// content and r.Object empty it is a metadata-only update. A refused
// request's object is deleted by the service. Errors are as [Client.Publish]'s.
func (c *Client) PublishDocument(ctx context.Context, r DocumentRequest, content io.Reader) (Response, error) {
	if content != nil {
		if r.Object != "" {
			return Response{}, &Error{Code: CodeInvalid, Message: "content and object both given"}
		}
		jc, err := natsjs.NewClient(c.nc)
		if err != nil {
			return Response{}, fmt.Errorf("publish: %w", err)
		}
		put, err := jc.Publisher().PutContent(ctx, r.OrgUnit, r.RecordID, mediaType(r.ContentType), fullChunks(content))
		if err != nil {
			return Response{}, fmt.Errorf("publish: put document content: %w", err)
		}
		r.Object = put.Object
	}
	return c.request(ctx, DocumentSubject, r)
}

func (c *Client) request(ctx context.Context, subject string, r any) (Response, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return Response{}, fmt.Errorf("publish: encode request: %w", err)
	}
	msg, err := c.nc.RequestWithContext(ctx, subject, data)
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
