package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// Syncer downloads a device's org unit streams into its store. One Syncer
// runs one sync at a time.
type Syncer struct {
	cfg      Config
	client   *natsjs.Client
	db       *store.DB
	log      *slog.Logger
	progress atomic.Pointer[progress]
	staging  atomic.Bool     // the running sync downloads into staging
	refresh  func() bool     // the refresh-mode setting, read at each sync start
	unparked atomic.Bool     // parked changes were re-read with this build's reader
	upMu     sync.Mutex      // one upload at a time (sync and autosync)
	resMu    sync.Mutex      // one results reader at a time
	metrics  syncMetrics     // nil: nothing is reported
	orgUnits func() []string // the units carried now (nil: the config's)
	onChange func()          // told when the progress changes (nil: nobody)
	// onDecided is told what each committed batch of results decided
	// (the agent's outcome log; nil: nobody).
	onDecided func([]store.Decided)
	// Test hooks: onBatch runs after each committed batch, onTrace is told
	// of every upload and download step in order, beforeMarkSent runs
	// between publishing an upload and recording it, beforeWipe between
	// Sync Now's settling and its wipe (attempt counts from 1).
	onBatch        func(unit string, ch events.Channel, applied int)
	onTrace        func(op string)
	beforeMarkSent func(store.Mutation)
	beforeWipe     func(attempt int)
}

// NewSyncer returns a syncer for the device described by cfg.
func NewSyncer(cfg Config, client *natsjs.Client, db *store.DB, log *slog.Logger) *Syncer {
	if log == nil {
		log = slog.Default()
	}
	s := &Syncer{cfg: cfg.WithDefaults(), client: client, db: db, log: log}
	s.progress.Store(newProgress(nil))
	return s
}

// syncMetrics is told what the Syncer downloads and applies (the agent's
// Prometheus metrics); the Syncer works without one.
type syncMetrics interface {
	// Applied: n changes of channel were written to the store, live or
	// staged.
	Applied(channel string, n int)
	// Downloaded: payload bytes received from the broker.
	Downloaded(bytes int)
}

// changed tells the agent that the sync's state changed.
func (s *Syncer) changed() {
	if s.onChange != nil {
		s.onChange()
	}
}

// downloaded reports the payload bytes of ds.
func (s *Syncer) downloaded(ds []natsjs.Delivery) {
	if s.metrics == nil {
		return
	}
	n := 0
	for _, d := range ds {
		n += len(d.Data)
	}
	s.metrics.Downloaded(n)
}

// Report summarises one sync.
type Report struct {
	Scope    Scope     `json:"scope"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Staged: the sync downloaded into staging (refresh mode); Resumed: it
	// continued an interrupted staged download; Discarded: it dropped one
	// older than the resume window; UpdatesAvailable: Apply has work.
	Staged           bool              `json:"staged"`
	Resumed          bool              `json:"resumed,omitempty"`
	Discarded        bool              `json:"discarded,omitempty"`
	UpdatesAvailable bool              `json:"updates_available,omitempty"`
	Uploaded         int               `json:"uploaded"`
	Results          int               `json:"results"`
	Applied          int               `json:"applied"`
	Rejected         int               `json:"rejected"`
	Parked           int               `json:"parked"` // kept for a newer build, see store.DB.ApplyParked
	Channels         []ChannelProgress `json:"channels"`
}

// Sync runs one sync of scope. Queued writes go up first, all of them,
// before any download; then, for each channel and unit, changes download
// from the local checkpoint until the broker has nothing more pending (a
// (unit, channel) never read before starts with the latest version of each
// record); last, the results of uploaded writes are applied.
func (s *Syncer) Sync(ctx context.Context, scope Scope) (Report, error) {
	s.progress.Store(newProgress(s.onChange))
	s.changed()
	r := Report{Scope: scope, Started: time.Now()}
	if err := s.applyParked(ctx); err != nil {
		r.Finished = time.Now()
		return r, err
	}
	if err := s.Handshake(ctx); err != nil {
		r.Finished = time.Now()
		return r, err
	}
	var err error
	if r.Uploaded, err = s.Upload(ctx); err != nil {
		r.Finished = time.Now()
		return r, fmt.Errorf("upload: %w", err)
	}
	if err := s.prepareStaging(ctx, &r); err != nil {
		r.Finished = time.Now()
		return r, err
	}
	for _, ch := range scope.Channels() {
		if err := s.syncChannel(ctx, ch, &r); err != nil {
			r.Finished, r.Channels = time.Now(), s.progress.Load().snapshot()
			return r, err
		}
	}
	if r.Results, err = s.Results(ctx); err != nil {
		r.Finished = time.Now()
		return r, fmt.Errorf("results: %w", err)
	}
	if r.Staged {
		if r.UpdatesAvailable, err = s.db.MarkStagingReady(ctx, s.cfg.Clock()); err != nil {
			return r, err
		}
	}
	r.Finished, r.Channels = time.Now(), s.progress.Load().snapshot()
	return r, nil
}

// prepareStaging decides how this sync lands. In refresh mode (the
// default) changes download into staging and wait for Apply; an
// interrupted staged download is resumed within the resume window and
// discarded after it. With refresh mode off changes apply as they download
// (blocking sync), and any staging left from before is dropped.
func (s *Syncer) prepareStaging(ctx context.Context, r *Report) error {
	r.Staged = s.cfg.Refresh()
	if s.refresh != nil {
		r.Staged = s.refresh()
	}
	s.staging.Store(r.Staged)
	if !r.Staged {
		return s.db.DropStaging(ctx)
	}
	resumed, discarded, err := s.db.BeginStaging(ctx, s.cfg.ResumeWindow, s.cfg.Clock())
	if err != nil {
		return err
	}
	r.Resumed, r.Discarded = resumed, discarded
	if resumed || discarded {
		s.log.Info("staged download", "resumed", resumed, "discarded_after_resume_window", discarded)
	}
	return nil
}

// Handshake exchanges protocol versions with the broker; an incompatible
// pair fails with an error wrapping [events.ErrIncompatible] that says
// which side must be upgraded, before anything is sent or applied.
func (s *Syncer) Handshake(ctx context.Context) error {
	if !s.client.Connected() {
		return ErrOffline
	}
	mine := events.LocalHello("agent")
	mine.DeviceID, mine.SchemaVersion = s.cfg.DeviceID, s.cfg.Reader().SchemaVersion()
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	_, err := s.client.Hello(hctx, mine)
	return err
}

// handshakeTimeout bounds the version check.
const handshakeTimeout = 5 * time.Second

// ErrOffline: the device has no connection to the broker right now.
var ErrOffline = errors.New("agent: not connected to the server")

// Progress returns the running (or last) sync's progress.
func (s *Syncer) Progress() []ChannelProgress { return s.progress.Load().snapshot() }

// units returns the units channel ch is read from; admin data also comes
// from the tenant-wide stream ("").
func (s *Syncer) units(ch events.Channel) []string {
	if ch == events.ChannelAdmin {
		return append([]string{""}, s.carried()...)
	}
	return s.carried()
}

// carried returns the org units the device carries now.
func (s *Syncer) carried() []string {
	if s.orgUnits != nil {
		return s.orgUnits()
	}
	return s.cfg.OrgUnits
}

func (s *Syncer) syncChannel(ctx context.Context, ch events.Channel, r *Report) (err error) {
	bulk, err := s.bulkEligible(ctx, ch)
	if err != nil {
		return err
	}
	if bulk {
		defer func() {
			if bulk { // still in bulk mode: build the indexes whatever happened
				err = errors.Join(err, s.db.EndBulk(context.WithoutCancel(ctx), ch))
			}
		}()
	}
	for _, unit := range s.units(ch) {
		if err := s.syncUnit(ctx, unit, ch, &bulk, r); err != nil {
			return fmt.Errorf("sync %s/%s: %w", unitName(unit), ch, err)
		}
	}
	return nil
}

// bulkEligible: a channel whose table is empty and that no unit has read
// yet is loaded in bulk mode (indexes built at the end).
func (s *Syncer) bulkEligible(ctx context.Context, ch events.Channel) (bool, error) {
	for _, unit := range s.units(ch) {
		cp, err := s.db.Checkpoint(ctx, unit, ch)
		if err != nil {
			return false, err
		}
		if cp.LastSeq > 0 || cp.SnapshotDone {
			return false, nil
		}
	}
	return s.db.BeginBulk(ctx, ch)
}

func unitName(u string) string {
	if u == "" {
		return "tenant"
	}
	return u
}
