package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// Upload is one device upload read by ingest. Ack it once its result is
// recorded; until then it is redelivered.
type Upload struct {
	Subject   string
	Data      []byte
	StreamSeq uint64
	// Delivered counts deliveries of this message (1 the first time).
	Delivered uint64
	// MsgID is the upload's dedupe id, "<device>.<mutation>" when a device
	// agent sent it; it names the mutation even when Data is unreadable.
	MsgID string
	// Address is the record the upload claims in [events.AddressHeader]
	// ("" from agents older than it); ingest checks it against the
	// envelope.
	Address string
	msg     jetstream.Msg
}

// Ack confirms the upload is fully handled.
func (u *Upload) Ack() error { return u.msg.Ack() }

// Nak asks for redelivery after delay.
func (u *Upload) Nak(delay time.Duration) error { return u.msg.NakWithDelay(delay) }

// IngestReader reads the uploads stream through the shared durable
// [IngestDurable]: every broker node may run one, JetStream hands each
// upload to one of them.
type IngestReader struct {
	it jetstream.MessagesContext
}

// OpenIngest binds to (creating if needed) the shared ingest durable.
func (c *Client) OpenIngest(ctx context.Context, p IngestPolicy) (*IngestReader, error) {
	ackWait := p.withDefaults().AckWait
	cons, err := c.js.CreateOrUpdateConsumer(ctx, events.UploadStream, jetstream.ConsumerConfig{
		Durable: IngestDurable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxAckPending: 20000, MaxDeliver: -1, FilterSubject: events.UploadSubjects(),
	})
	if err != nil {
		return nil, fmt.Errorf("natsjs: ingest durable: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(ingestBufferBytes))
	if err != nil {
		return nil, fmt.Errorf("natsjs: ingest read: %w", err)
	}
	return &IngestReader{it: it}, nil
}

// Memory of the ingest reader is bounded by bytes, not upload counts
// (bodies go up to 256 KiB): the client prefetches about
// ingestBufferBytes, and a batch of [IngestReader.Next] holds about
// ingestBatchBytes.
const (
	ingestBufferBytes = 8 << 20
	ingestBatchBytes  = 4 << 20
)

// Next waits for at least one upload (or ctx) and returns up to max, and
// up to about 4 MiB of data.
func (r *IngestReader) Next(ctx context.Context, max int) ([]*Upload, error) {
	var out []*Upload
	size := 0
	for len(out) < max && size < ingestBatchBytes {
		var msg jetstream.Msg
		var err error
		if len(out) == 0 {
			msg, err = r.it.Next(jetstream.NextContext(ctx))
		} else {
			msg, err = r.it.Next(jetstream.NextMaxWait(time.Millisecond))
		}
		if err != nil {
			if len(out) > 0 && errors.Is(err, nats.ErrTimeout) {
				return out, nil
			}
			return out, err
		}
		md, err := msg.Metadata()
		if err != nil {
			msg.Term()
			continue
		}
		out = append(out, &Upload{Subject: msg.Subject(), Data: msg.Data(), StreamSeq: md.Sequence.Stream, Delivered: md.NumDelivered,
			MsgID: msg.Headers().Get(jetstream.MsgIDHeader), Address: msg.Headers().Get(events.AddressHeader), msg: msg})
		size += len(msg.Data())
	}
	return out, nil
}

// Close stops reading; unacknowledged uploads are redelivered later.
func (r *IngestReader) Close() { r.it.Stop() }

// IngestPending returns how many uploads wait for ingest: not yet
// delivered plus delivered but not acknowledged (the ingest lag).
func (c *Client) IngestPending(ctx context.Context) (uint64, error) {
	cons, err := c.js.Consumer(ctx, events.UploadStream, IngestDurable)
	if err != nil {
		return 0, fmt.Errorf("natsjs: ingest durable: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natsjs: ingest durable: %w", err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}
