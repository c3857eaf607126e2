package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// Names of the ingest side's streams, bucket and durable.
const (
	DeadLetterStream = "FS_DEADLETTER"
	IngestDurable    = "fs_ingest"
)

// IngestPolicy holds the limits of the upload side.
type IngestPolicy struct {
	// ResultRetention is how long the result of every mutation is kept
	// (stream FS_RESULTS, one message per mutation). It is ingest's memory:
	// a mutation replayed within it gets its first result again and is
	// never applied twice (default 400 days).
	ResultRetention time.Duration
	// AckWait is how long an upload handed to an ingest worker may stay
	// unacknowledged before it is redelivered (to this or another node)
	// (default 10s). Redelivery is safe: results are remembered.
	AckWait  time.Duration
	Replicas int
	// UploadMaxBytes caps FS_UPLOADS, the uploads ingest has not decided
	// yet (default 1 GiB; -1 no cap). Full, it refuses new uploads
	// (DiscardNew): they stay queued on their devices and go up again.
	UploadMaxBytes int64
	// DevicePendingUploads is one device's quota: how many of its uploads
	// FS_UPLOADS holds at most while ingest has not decided them (default
	// 1,000; -1 no quota). Over it the broker refuses that device's next
	// upload ([ErrUploadQuota]) and no one else's. See the README's quotas.
	DevicePendingUploads int64
	// DeadLetterMaxBytes caps FS_DEADLETTER (default 256 MiB; -1 no cap),
	// dropping the oldest.
	DeadLetterMaxBytes int64
	// DeadLetterRetention keeps dead letters this long (default 14 days).
	DeadLetterRetention time.Duration
}

// Default stream bounds of the upload side.
const (
	DefaultUploadMaxBytes       = 1 << 30
	DefaultDevicePendingUploads = 1000
	DefaultDeadLetterMaxBytes   = 256 << 20
)

func (p IngestPolicy) withDefaults() IngestPolicy {
	if p.ResultRetention == 0 {
		p.ResultRetention = 400 * 24 * time.Hour
	}
	if p.Replicas == 0 {
		p.Replicas = 1
	}
	if p.AckWait == 0 {
		p.AckWait = 10 * time.Second
	}
	if p.UploadMaxBytes == 0 {
		p.UploadMaxBytes = DefaultUploadMaxBytes
	}
	if p.DevicePendingUploads == 0 {
		p.DevicePendingUploads = DefaultDevicePendingUploads
	}
	if p.DeadLetterMaxBytes == 0 {
		p.DeadLetterMaxBytes = DefaultDeadLetterMaxBytes
	}
	if p.DeadLetterRetention == 0 {
		p.DeadLetterRetention = 14 * 24 * time.Hour
	}
	return p
}

// ProvisionIngest creates or updates the uploads, results and dead-letter
// streams. Idempotent.
//
// FS_UPLOADS is a work queue: an upload leaves it once ingest has decided
// it (its memory of decided mutations is FS_RESULTS), so the stream holds
// exactly the uploads still waiting. Its subject transform stores every
// upload of device D under fs.up.D ([events.StoredUploadSubject]); the
// per-subject limit is then a per-device quota of waiting uploads, which
// the broker enforces on publish (DiscardNewPerSubject), and the byte cap
// refuses new uploads rather than dropping waiting ones (DiscardNew).
// Refused uploads stay queued on their devices: nothing is lost, and one
// device cannot take the stream from the others. FS_DEADLETTER drops its
// oldest when full: ingest must never be refused its own dead letters.
//
// A FS_UPLOADS created by an older build (limits retention, which
// nats-server cannot change to a work queue in place) is left as it is and
// the error wraps [ErrLegacyUploads]; everything else is provisioned.
func (c *Client) ProvisionIngest(ctx context.Context, p IngestPolicy) error {
	p = p.withDefaults()
	src, dest := events.UploadSubjectTransform()
	streams := []jetstream.StreamConfig{
		{Name: events.UploadStream, Description: "fieldsync device uploads waiting for ingest", Subjects: []string{events.UploadSubjects()},
			Retention: jetstream.WorkQueuePolicy, SubjectTransform: &jetstream.SubjectTransformConfig{Source: src, Destination: dest},
			MaxBytes: p.UploadMaxBytes, MaxMsgsPerSubject: p.DevicePendingUploads, Discard: jetstream.DiscardNew,
			DiscardNewPerSubject: p.DevicePendingUploads > 0, Duplicates: 2 * time.Minute, MaxMsgSize: int32(events.MaxMessageSize * 2)},
		{Name: events.ResultStream, Description: "fieldsync ingest results per device", Subjects: []string{events.ResultSubjects()},
			MaxAge: p.ResultRetention, MaxMsgsPerSubject: 1, Duplicates: 2 * time.Minute},
		{Name: DeadLetterStream, Description: "fieldsync uploads ingest could not read", Subjects: []string{events.DeadLetterSubjects()},
			MaxAge: p.DeadLetterRetention, MaxBytes: p.DeadLetterMaxBytes, Discard: jetstream.DiscardOld},
	}
	var legacy error
	for _, cfg := range streams {
		cfg.Storage, cfg.Replicas, cfg.MaxConsumers, cfg.AllowDirect = jetstream.FileStorage, p.Replicas, -1, true
		if cfg.Name == events.UploadStream {
			if old, err := c.js.Stream(ctx, cfg.Name); err == nil && old.CachedInfo().Config.Retention != jetstream.WorkQueuePolicy {
				legacy = fmt.Errorf("%w: %s keeps its %v retention: per-device quotas are off and full it drops the oldest uploads",
					ErrLegacyUploads, cfg.Name, old.CachedInfo().Config.Retention)
				continue
			}
		}
		if _, err := c.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("natsjs: provision %s: %w", cfg.Name, err)
		}
	}
	return legacy
}

// PublishUpload publishes a device's mutation on its upload subject and
// waits for the broker to store it. The mutation id is the dedupe id.
func (c *Client) PublishUpload(ctx context.Context, e *events.Envelope) (uint64, error) {
	subj, err := events.UploadSubject(e.Origin.DeviceID, e.Address())
	if err != nil {
		return 0, err
	}
	data, err := events.Encode(e)
	if err != nil {
		return 0, err
	}
	pa, err := c.js.PublishMsg(ctx, uploadMsg(subj, e, data),
		jetstream.WithMsgID(e.Origin.DeviceID+"."+e.Origin.MutationID), jetstream.WithExpectStream(events.UploadStream))
	if err != nil {
		return 0, fmt.Errorf("natsjs: upload %s: %w", subj, uploadErr(err))
	}
	return pa.Sequence, nil
}

// PublishUploads publishes es, a device's mutations in queue order, on
// their upload subjects without waiting between them, then waits for the
// broker to store each. It returns how many, from the first, were stored
// before the first failure: those after it may be stored too, which is
// harmless (the mutation id dedupes, ingest applies each once), and go up
// again with the next upload. One connection keeps their order in the
// stream.
func (c *Client) PublishUploads(ctx context.Context, es []*events.Envelope) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(es))
	for _, e := range es {
		subj, err := events.UploadSubject(e.Origin.DeviceID, e.Address())
		if err != nil {
			return 0, err
		}
		data, err := events.Encode(e)
		if err != nil {
			return 0, err
		}
		f, err := c.js.PublishMsgAsync(uploadMsg(subj, e, data),
			jetstream.WithMsgID(e.Origin.DeviceID+"."+e.Origin.MutationID), jetstream.WithExpectStream(events.UploadStream))
		if err != nil {
			return 0, fmt.Errorf("natsjs: upload %s: %w", subj, err)
		}
		futures = append(futures, f)
	}
	timeout := time.NewTimer(uploadAckWait)
	defer timeout.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return i, fmt.Errorf("natsjs: upload %s: %w", f.Msg().Subject, uploadErr(err))
		case <-timeout.C:
			// The broker went away before acknowledging (the client does not
			// fail outstanding acks by itself): what is not acknowledged goes
			// up again with the next upload.
			return i, fmt.Errorf("natsjs: upload %s: %w after %v", f.Msg().Subject, ErrUploadNotAcked, uploadAckWait)
		case <-ctx.Done():
			return i, ctx.Err()
		}
	}
	return len(futures), nil
}

// uploadMsg is the upload of e (encoded as data) on subj, naming its
// record in [events.AddressHeader].
func uploadMsg(subj string, e *events.Envelope, data []byte) *nats.Msg {
	m := nats.NewMsg(subj)
	m.Data = data
	m.Header.Set(events.AddressHeader, e.Address().Key())
	return m
}

// jsErrStoreFailed is nats-server's JSStreamStoreFailedF: a stream
// refused to store a message (its limits, with DiscardNew).
const jsErrStoreFailed = 10077

// uploadErr marks the broker's refusals for being over the device's quota
// or FS_UPLOADS' cap with [ErrUploadQuota].
func uploadErr(err error) error {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jsErrStoreFailed &&
		(strings.Contains(api.Description, "maximum messages") || strings.Contains(api.Description, "maximum bytes")) {
		return fmt.Errorf("%w: %s", ErrUploadQuota, api.Description)
	}
	return err
}

// uploadAckWait bounds how long [Client.PublishUploads] waits for the
// broker's acknowledgements of one page of uploads (what a synchronous
// JetStream publish waits by default).
const uploadAckWait = 5 * time.Second

// PublishResult publishes an ingest result to its device.
func (c *Client) PublishResult(ctx context.Context, r *events.Result) error {
	subj, err := events.ResultSubject(r.DeviceID, r.MutationID)
	if err != nil {
		return err
	}
	data, err := events.EncodeResult(r)
	if err != nil {
		return err
	}
	_, err = c.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: data}, jetstream.WithMsgID("res."+r.DeviceID+"."+r.MutationID))
	if err != nil {
		return fmt.Errorf("natsjs: result %s: %w", subj, err)
	}
	return nil
}

// DeadLetter stores an upload ingest could not use, with the reason, for
// operators. reason must be a token (see [events.ValidToken]).
func (c *Client) DeadLetter(ctx context.Context, reason string, u *Upload, why error) error {
	subj, err := events.DeadLetterSubject(reason)
	if err != nil {
		return fmt.Errorf("natsjs: dead-letter: %w", err)
	}
	msg := &nats.Msg{Subject: subj, Data: u.Data, Header: nats.Header{}}
	msg.Header.Set("Fs-Original-Subject", u.Subject)
	if u.Address != "" {
		msg.Header.Set(events.AddressHeader, u.Address)
	}
	msg.Header.Set("Fs-Error", why.Error())
	if _, err := c.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("natsjs: dead-letter: %w", err)
	}
	return nil
}

// MutationLog remembers the result of every device mutation: it reads and
// writes the results stream, where each mutation has its own subject.
type MutationLog struct {
	c *Client
	s jetstream.Stream
}

// MutationLog opens the log.
func (c *Client) MutationLog(ctx context.Context) (*MutationLog, error) {
	s, err := c.js.Stream(ctx, events.ResultStream)
	if err != nil {
		return nil, fmt.Errorf("natsjs: %s: %w", events.ResultStream, err)
	}
	return &MutationLog{c: c, s: s}, nil
}

// Get returns the remembered result of (device, mutation), or nil.
func (l *MutationLog) Get(ctx context.Context, device, mutation string) (*events.Result, error) {
	subj, err := events.ResultSubject(device, mutation)
	if err != nil {
		return nil, err
	}
	m, err := l.s.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natsjs: mutation log: %w", err)
	}
	return events.DecodeResult(m.Data)
}

// Put remembers r and delivers it to its device (see [Client.PublishResult]).
func (l *MutationLog) Put(ctx context.Context, r *events.Result) error {
	return l.c.PublishResult(ctx, r)
}
