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

// Names of the ingest side's streams, bucket and durable.
const (
	DeadLetterStream = "FS_DEADLETTER"
	deadLetterPrefix = "fs.dlq"
	MutationBucket   = "fs_mutations"
	IngestDurable    = "fs_ingest"
)

// IngestPolicy holds the limits of the upload side.
type IngestPolicy struct {
	// UploadRetention keeps uploads this long after they arrive, for
	// operators and replays (default 14 days).
	UploadRetention time.Duration `yaml:"upload_retention"`
	// ResultRetention keeps results this long: a device offline longer
	// re-uploads and gets the remembered result (default 30 days).
	ResultRetention time.Duration `yaml:"result_retention"`
	// MutationMemory is how long ingest remembers each mutation's result,
	// so a replay is never applied twice (default 400 days).
	MutationMemory time.Duration `yaml:"mutation_memory"`
	Replicas       int           `yaml:"replicas"`
}

func (p IngestPolicy) withDefaults() IngestPolicy {
	if p.UploadRetention == 0 {
		p.UploadRetention = 14 * 24 * time.Hour
	}
	if p.ResultRetention == 0 {
		p.ResultRetention = 30 * 24 * time.Hour
	}
	if p.MutationMemory == 0 {
		p.MutationMemory = 400 * 24 * time.Hour
	}
	if p.Replicas == 0 {
		p.Replicas = 1
	}
	return p
}

// ProvisionIngest creates or updates the uploads, results and dead-letter
// streams and the mutation bucket. Idempotent.
func (c *Client) ProvisionIngest(ctx context.Context, p IngestPolicy) error {
	p = p.withDefaults()
	streams := []jetstream.StreamConfig{
		{Name: events.UploadStream, Description: "fieldsync device uploads", Subjects: []string{events.UploadSubjects()},
			MaxAge: p.UploadRetention, Duplicates: 2 * time.Minute, MaxMsgSize: int32(events.MaxMessageSize * 2)},
		{Name: events.ResultStream, Description: "fieldsync ingest results per device", Subjects: []string{events.ResultSubjects()},
			MaxAge: p.ResultRetention, MaxMsgsPerSubject: 1, Duplicates: 2 * time.Minute},
		{Name: DeadLetterStream, Description: "fieldsync uploads ingest could not read", Subjects: []string{deadLetterPrefix + ".>"},
			MaxAge: p.UploadRetention},
	}
	for _, cfg := range streams {
		cfg.Storage, cfg.Replicas, cfg.MaxConsumers, cfg.AllowDirect = jetstream.FileStorage, p.Replicas, -1, true
		if _, err := c.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("natsjs: provision %s: %w", cfg.Name, err)
		}
	}
	_, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: MutationBucket, TTL: p.MutationMemory,
		History: 1, Replicas: p.Replicas, Description: "fieldsync: result of every device mutation, for exactly-once"})
	if err != nil {
		return fmt.Errorf("natsjs: provision %s: %w", MutationBucket, err)
	}
	return nil
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
	pa, err := c.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: data},
		jetstream.WithMsgID(e.Origin.DeviceID+"."+e.Origin.MutationID), jetstream.WithExpectStream(events.UploadStream))
	if err != nil {
		return 0, fmt.Errorf("natsjs: upload %s: %w", subj, err)
	}
	return pa.Sequence, nil
}

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
func (c *Client) DeadLetter(ctx context.Context, reason, subject string, data []byte, why error) error {
	msg := &nats.Msg{Subject: deadLetterPrefix + "." + reason, Data: data, Header: nats.Header{}}
	msg.Header.Set("Fs-Original-Subject", subject)
	msg.Header.Set("Fs-Error", why.Error())
	if _, err := c.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("natsjs: dead-letter: %w", err)
	}
	return nil
}

// MutationLog remembers the result of every device mutation.
type MutationLog struct {
	kv jetstream.KeyValue
}

// MutationLog opens the mutation bucket.
func (c *Client) MutationLog(ctx context.Context) (*MutationLog, error) {
	kv, err := c.js.KeyValue(ctx, MutationBucket)
	if err != nil {
		return nil, fmt.Errorf("natsjs: %s: %w", MutationBucket, err)
	}
	return &MutationLog{kv: kv}, nil
}

// Get returns the remembered result of (device, mutation), or nil.
func (l *MutationLog) Get(ctx context.Context, device, mutation string) (*events.Result, error) {
	e, err := l.kv.Get(ctx, device+"."+mutation)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natsjs: mutation log: %w", err)
	}
	return events.DecodeResult(e.Value())
}

// Put remembers r.
func (l *MutationLog) Put(ctx context.Context, r *events.Result) error {
	data, err := events.EncodeResult(r)
	if err != nil {
		return err
	}
	if _, err := l.kv.Put(ctx, r.DeviceID+"."+r.MutationID, data); err != nil {
		return fmt.Errorf("natsjs: mutation log: %w", err)
	}
	return nil
}
