package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
)

// StreamPolicy holds the limits set on every org unit stream. Each limit is
// set on purpose; [DefaultStreamPolicy] documents the reasoning.
type StreamPolicy struct {
	// History is how many versions of one record a stream keeps
	// (MaxMsgsPerSubject). A device only ever needs the latest; a little
	// history helps audits and the change feed.
	History int64
	// Duplicates is the JetStream dedupe window for event ids (Nats-Msg-Id).
	// Publishers retrying within it are deduplicated by the broker; device
	// mutations carry their own idempotency that lasts longer.
	Duplicates time.Duration
	// MaxConsumers per stream, and for the streams that set none (results,
	// document buckets) through the server's default (nats-server 2.15's
	// own is 1,000). A device syncing holds one durable per channel on each
	// of its units' streams and one each on FS_TENANT and FS_RESULTS, until
	// [DefaultInactiveThreshold] after its last sync.
	MaxConsumers int
	// Replicas: 1 on a single node, 3 in a cluster.
	Replicas int
	// MaxBytes caps one stream's size (-1 = no cap).
	MaxBytes int64
	// DocumentBytes caps one unit's document bucket (-1 = no cap).
	DocumentBytes int64
}

// DefaultStreamPolicy returns the policy used when configuration sets none:
// 16 versions per record, a 2-minute dedupe window (the broker keeps every id
// of the window in memory, so longer windows cost memory at high rates),
// 40,000 consumers per stream (10,000 devices: one each on
// FS_TENANT and FS_RESULTS, three on a unit's stream holding all of them,
// plus feed consumers), one replica, no size cap.
func DefaultStreamPolicy() StreamPolicy {
	return StreamPolicy{History: 16, Duplicates: 2 * time.Minute, MaxConsumers: 40000, Replicas: 1, MaxBytes: -1, DocumentBytes: -1}
}

func (p StreamPolicy) withDefaults() StreamPolicy {
	d := DefaultStreamPolicy()
	if p.History == 0 {
		p.History = d.History
	}
	if p.Duplicates == 0 {
		p.Duplicates = d.Duplicates
	}
	if p.MaxConsumers == 0 {
		p.MaxConsumers = d.MaxConsumers
	}
	if p.Replicas == 0 {
		p.Replicas = d.Replicas
	}
	if p.MaxBytes == 0 {
		p.MaxBytes = d.MaxBytes
	}
	if p.DocumentBytes == 0 {
		p.DocumentBytes = d.DocumentBytes
	}
	return p
}

// StreamConfig returns the JetStream configuration of unit's stream (the
// tenant-wide admin stream for an empty unit).
func StreamConfig(unit string, p StreamPolicy) (jetstream.StreamConfig, error) {
	p = p.withDefaults()
	name, err := events.OrgStream(unit)
	if err != nil {
		return jetstream.StreamConfig{}, err
	}
	subj, _ := events.OrgSubjects(unit)
	desc := "fieldsync changes of org unit " + unit
	if unit == "" {
		desc = "fieldsync tenant-wide admin data"
	}
	return jetstream.StreamConfig{
		Name:              name,
		Description:       desc,
		Subjects:          []string{subj},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: p.History,
		MaxBytes:          p.MaxBytes,
		MaxMsgs:           -1,
		MaxMsgSize:        int32(events.MaxMessageSize),
		Duplicates:        p.Duplicates,
		MaxConsumers:      p.MaxConsumers,
		Replicas:          p.Replicas,
		AllowDirect:       true,
	}, nil
}

// provision creates or updates the tenant-wide stream and one stream and
// one document bucket ([DocumentStoreConfig]) per org unit. It is idempotent: running it again with the same input changes
// nothing, with a changed policy it updates the streams in place.
func provision(ctx context.Context, js jetstream.JetStream, units []string, p StreamPolicy) error {
	for _, unit := range append([]string{""}, units...) {
		cfg, err := StreamConfig(unit, p)
		if err != nil {
			return fmt.Errorf("natsjs: provision %q: %w", unit, err)
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("natsjs: provision stream %s: %w", cfg.Name, err)
		}
		if unit != "" {
			if err := provisionDocuments(ctx, js, unit, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// StreamState is the part of a stream's state the rest of fieldsync uses.
type StreamState struct {
	Name     string
	Msgs     uint64
	FirstSeq uint64
	LastSeq  uint64
	Subjects uint64
	Consumer int
}

func unitState(ctx context.Context, js jetstream.JetStream, unit string) (StreamState, error) {
	name, err := events.OrgStream(unit)
	if err != nil {
		return StreamState{}, err
	}
	s, err := js.Stream(ctx, name)
	if err != nil {
		return StreamState{}, unitErr(unit, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return StreamState{}, unitErr(unit, err)
	}
	st := info.State
	return StreamState{Name: name, Msgs: st.Msgs, FirstSeq: st.FirstSeq, LastSeq: st.LastSeq,
		Subjects: st.NumSubjects, Consumer: st.Consumers}, nil
}

// unitErr names the unit in err, and makes it [ErrUnknownUnit] when err
// says the unit's stream does not exist (the client's sentinel, wrapped
// or not, or the server's API error with that code).
func unitErr(unit string, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("%w: %q", ErrUnknownUnit, unit)
	}
	return fmt.Errorf("natsjs: unit %q: %w", unit, err)
}

func deleteDurable(ctx context.Context, js jetstream.JetStream, unit, durable string) error {
	name, err := events.OrgStream(unit)
	if err != nil {
		return err
	}
	err = js.DeleteConsumer(ctx, name, durable)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("natsjs: delete durable %s: %w", durable, err)
	}
	return nil
}
