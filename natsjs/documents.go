package natsjs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/fieldsync/fieldsync/events"
)

// Document content lives in one object store per org unit (see package
// events, [events.DocumentBucket]); this file puts, describes, deletes and
// reads it.

var (
	// ErrContentGone: the object a document record names is no longer in
	// its bucket (the document changed twice since, or was deleted): sync
	// and apply to get the current version.
	ErrContentGone = errors.New("natsjs: document content no longer on the server")
	// ErrContentMismatch: the chunks read do not add up to the size and
	// chunk count the record names.
	ErrContentMismatch = errors.New("natsjs: document content does not match its record")
)

// DocumentStoreConfig returns the object store configuration of unit's
// document bucket: file storage, the unit streams' replicas, p's
// DocumentBytes cap.
func DocumentStoreConfig(unit string, p StreamPolicy) (jetstream.ObjectStoreConfig, error) {
	p = p.withDefaults()
	b, err := events.DocumentBucket(unit)
	if err != nil {
		return jetstream.ObjectStoreConfig{}, err
	}
	return jetstream.ObjectStoreConfig{Bucket: b, Description: "fieldsync document content of org unit " + unit,
		Storage: jetstream.FileStorage, Replicas: p.Replicas, MaxBytes: p.DocumentBytes}, nil
}

func provisionDocuments(ctx context.Context, js jetstream.JetStream, unit string, p StreamPolicy) error {
	cfg, err := DocumentStoreConfig(unit, p)
	if err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, cfg); err != nil {
		return fmt.Errorf("natsjs: provision document bucket %s: %w", cfg.Bucket, err)
	}
	return nil
}

func (p *Publisher) bucket(ctx context.Context, unit string) (jetstream.ObjectStore, error) {
	b, err := events.DocumentBucket(unit)
	if err != nil {
		return nil, err
	}
	obs, err := p.js.ObjectStore(ctx, b)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: %q (no document bucket)", ErrUnknownUnit, unit)
	}
	if err != nil {
		return nil, fmt.Errorf("natsjs: document bucket of %q: %w", unit, err)
	}
	return obs, nil
}

// PutContent stores r as a new object of record recordID in unit's bucket
// (a fresh [events.DocumentObjectName], so it never replaces content a
// device may be reading) and returns the [events.Content] naming it.
func (p *Publisher) PutContent(ctx context.Context, unit, recordID, mediaType string, r io.Reader) (events.Content, error) {
	obs, err := p.bucket(ctx, unit)
	if err != nil {
		return events.Content{}, err
	}
	name, err := events.DocumentObjectName(recordID, nuid.Next())
	if err != nil {
		return events.Content{}, err
	}
	meta := jetstream.ObjectMeta{Name: name}
	if mediaType != "" {
		meta.Headers = nats.Header{"Content-Type": []string{mediaType}}
	}
	info, err := obs.Put(ctx, meta, r)
	if err != nil {
		return events.Content{}, fmt.Errorf("natsjs: put content of %s/%s: %w", unit, recordID, err)
	}
	return contentOf(info), nil
}

// ContentInfo describes object in unit's bucket: [ErrContentGone] when it
// is not there.
func (p *Publisher) ContentInfo(ctx context.Context, unit, object string) (events.Content, error) {
	obs, err := p.bucket(ctx, unit)
	if err != nil {
		return events.Content{}, err
	}
	info, err := obs.GetInfo(ctx, object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return events.Content{}, fmt.Errorf("%w: %s/%s", ErrContentGone, unit, object)
	}
	if err != nil {
		return events.Content{}, fmt.Errorf("natsjs: content %s/%s: %w", unit, object, err)
	}
	return contentOf(info), nil
}

// DeleteContent removes object and its chunks from unit's bucket; an
// object that is not there is not an error.
func (p *Publisher) DeleteContent(ctx context.Context, unit, object string) error {
	obs, err := p.bucket(ctx, unit)
	if err != nil {
		return err
	}
	if err := obs.Delete(ctx, object); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("natsjs: delete content %s/%s: %w", unit, object, err)
	}
	return nil
}

func contentOf(info *jetstream.ObjectInfo) events.Content {
	return events.Content{Object: info.Name, NUID: info.NUID, Size: int64(info.Size), Chunks: int64(info.Chunks),
		Digest: info.Digest, Type: info.Headers.Get("Content-Type")}
}

// DocumentConsumerName returns the name of the consumer a device reads
// document content through: one per device on each of its units' buckets,
// re-created for every download, so a device holds at most one there.
func DocumentConsumerName(device string) (string, error) {
	if err := events.ValidToken(device); err != nil {
		return "", err
	}
	return "fsdoc_" + device, nil
}

// ContentRead says what [Client.ReadContent] reads.
type ContentRead struct {
	Device  string
	Unit    string
	Content events.Content
	// AfterSeq resumes after the chunk stored at this stream sequence, of
	// which Done chunks were read before (0, 0: from the first chunk).
	AfterSeq uint64
	Done     int64
	// MaxBytes bounds the chunks in flight (default 16 MiB).
	MaxBytes int
}

// readIdle is how long a content read waits for the next chunk before it
// fails (the caller retries, resuming after what it recorded).
const readIdle = 30 * time.Second

// ReadContent reads r's chunks in order, from the first one after
// r.AfterSeq, and calls fn with each and its stream sequence; fn must not
// keep data. It returns nil after the last chunk the record names,
// [ErrContentGone] when the bucket no longer holds them, and fn's error as
// is. The chunks come through the device's own consumer
// ([DocumentConsumerName]): memory storage, no acks, deleted at the end.
func (c *Client) ReadContent(ctx context.Context, r ContentRead, fn func(data []byte, seq uint64) error) error {
	left := r.Content.Chunks - r.Done
	if left <= 0 {
		return nil
	}
	cons, stream, name, err := c.contentConsumer(ctx, r)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.js.DeleteConsumer(dctx, stream, name)
	}()
	// The create answer says how many chunks the consumer has: fewer than
	// the record names means the object is gone.
	if pending := int64(cons.CachedInfo().NumPending); pending < left {
		return fmt.Errorf("%w: %s/%s has %d of its %d chunks left", ErrContentGone, r.Unit, r.Content.Object, pending, left)
	}
	maxBytes := r.MaxBytes
	if maxBytes <= 0 {
		maxBytes = 16 << 20
	}
	// A count bound as well as the byte bound: with bytes alone the client
	// sizes its buffer for a million messages, for every download.
	inFlight := int(min(left, int64(max(maxBytes/(128<<10), 1))))
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(inFlight, maxBytes), jetstream.PullExpiry(readIdle))
	if err != nil {
		return fmt.Errorf("natsjs: content read: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	delivered := uint64(0)
	for ; left > 0; left-- {
		m, err := it.Next(jetstream.NextMaxWait(readIdle))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("natsjs: content read: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("natsjs: content chunk: %w", err)
		}
		// No acks: a chunk lost in flight is not sent again. Stop, and let
		// the caller resume after what it recorded.
		if delivered++; md.Sequence.Consumer != delivered {
			return fmt.Errorf("%w: chunk %d after %d", ErrDeliveryGap, md.Sequence.Consumer, delivered-1)
		}
		if err := fn(m.Data(), md.Sequence.Stream); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) contentConsumer(ctx context.Context, r ContentRead) (jetstream.Consumer, string, string, error) {
	stream, err := events.DocumentStream(r.Unit)
	if err != nil {
		return nil, "", "", err
	}
	subj, err := events.DocumentChunkSubject(r.Unit, r.Content.NUID)
	if err != nil {
		return nil, "", "", err
	}
	name, err := DocumentConsumerName(r.Device)
	if err != nil {
		return nil, "", "", err
	}
	cfg := jetstream.ConsumerConfig{Name: name, FilterSubject: subj, AckPolicy: jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy, MemoryStorage: true, Replicas: 1, InactiveThreshold: time.Minute}
	if r.AfterSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.AfterSeq+1
	}
	cons, err := c.js.CreateConsumer(ctx, stream, cfg)
	// A consumer an interrupted download left behind: with another start
	// the create fails, with the same one it answers the old consumer,
	// which has delivered chunks already. Either way it goes.
	if errors.Is(err, jetstream.ErrConsumerExists) || (err == nil && cons.CachedInfo().Delivered.Consumer > 0) {
		if err = c.js.DeleteConsumer(ctx, stream, name); err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) {
			cons, err = c.js.CreateConsumer(ctx, stream, cfg)
		}
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, "", "", fmt.Errorf("%w: %q (no document bucket)", ErrUnknownUnit, r.Unit)
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("natsjs: content consumer: %w", err)
	}
	return cons, stream, name, nil
}
