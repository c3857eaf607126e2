package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// Change is one change handed to a [Handler].
type Change struct {
	Unit    string // "" the tenant-wide admin data
	Channel events.Channel
	// Version is the record version the change made (its stream
	// sequence): apply a change only if it is newer than what you hold.
	Version uint64
	// Delivered counts deliveries: above 1 the change may have been handled
	// before (at least once, see the contract).
	Delivered uint64
	Envelope  *events.Envelope
}

// Handler processes one change. An error makes the subscription try it
// again, with backoff, up to [Options.MaxTries] times.
type Handler func(ctx context.Context, c Change) error

// DeadLetter is a change the handler failed on MaxTries times, or whose
// bytes do not decode; the subscription has moved past it.
type DeadLetter struct {
	Change Change
	Tries  int
	Err    error
	// Subject is the change's subject (the record, also when Envelope is
	// nil because it did not decode).
	Subject string
}

// Options configure a [Subscription].
type Options struct {
	// Integration is the integration's name, as its credentials were
	// issued (`broker-embed integration add --name`).
	Integration string
	// Units are the org units to follow ("" is the tenant-wide admin
	// data). Channels defaults to every channel (admin only for "").
	Units    []string
	Channels []events.Channel
	// Kinds, when set, are the only kinds handed to the handler; the
	// others are acknowledged unhandled as they pass (the durable reads
	// the whole channel, so that changing Kinds later never makes it skip
	// or reread anything: a kind added later starts from there).
	Kinds []string
	// Start applies when a durable is created; an existing one resumes.
	Start natsjs.FeedStart
	// AckWait is the durables' ack wait (default
	// [natsjs.DefaultFeedAckWait]); a handler running longer keeps its
	// change in progress, so it is not delivered twice.
	AckWait time.Duration
	// MaxTries is how often a change is tried before it is dead-lettered
	// (default 5). Retries wait with jittered exponential backoff from
	// RetryInitial (default 200 ms) up to RetryMax (default 10 s).
	MaxTries               int
	RetryInitial, RetryMax time.Duration
	// DeadLetters receives what could not be handled (default: logged).
	// See [FileDeadLetters].
	DeadLetters func(ctx context.Context, d DeadLetter) error
	Log         *slog.Logger
}

// Subscription follows the feed; see [New] and [Subscription.Run].
type Subscription struct {
	c    *natsjs.Client
	opts Options
	h    Handler
	mu   sync.Mutex
	lag  map[string]uint64
}

// New returns a subscription of c (connected with the integration's
// credentials and inbox prefix) that hands changes to h.
func New(c *natsjs.Client, opts Options, h Handler) *Subscription {
	if opts.MaxTries <= 0 {
		opts.MaxTries = 5
	}
	if opts.RetryInitial <= 0 {
		opts.RetryInitial = 200 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.AckWait <= 0 {
		opts.AckWait = natsjs.DefaultFeedAckWait
	}
	if opts.DeadLetters == nil {
		opts.DeadLetters = func(_ context.Context, d DeadLetter) error {
			opts.Log.Error("feed: change dead-lettered", "subject", d.Subject, "version", d.Change.Version, "tries", d.Tries, "err", d.Err)
			return nil
		}
	}
	return &Subscription{c: c, opts: opts, h: h, lag: map[string]uint64{}}
}

// ErrUnreadable: a change's envelope is of a newer schema than this build
// reads. The subscription stops without acknowledging it (upgrade, then
// run again: it is delivered again); it is never skipped.
var ErrUnreadable = errors.New("feed: change of a newer envelope schema")

// Run follows every (unit, channel) until ctx ends (it then returns nil)
// or one of them fails (the error, after stopping the others).
func (s *Subscription) Run(ctx context.Context) error {
	if err := events.ValidToken(s.opts.Integration); err != nil {
		return fmt.Errorf("feed: integration name: %w", err)
	}
	if len(s.opts.Units) == 0 {
		return errors.New("feed: no org units to follow")
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, unit := range s.opts.Units {
		for _, ch := range s.channels(unit) {
			g.Go(func() error { return s.follow(ctx, unit, ch) })
		}
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (s *Subscription) channels(unit string) []events.Channel {
	if unit == "" {
		return []events.Channel{events.ChannelAdmin}
	}
	if len(s.opts.Channels) > 0 {
		return s.opts.Channels
	}
	return events.Channels
}

// Lag returns, per "unit/channel", how many changes were still to come
// after the last one delivered.
func (s *Subscription) Lag() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.lag))
	for k, v := range s.lag {
		out[k] = v
	}
	return out
}

func (s *Subscription) follow(ctx context.Context, unit string, ch events.Channel) error {
	spec := natsjs.FeedSpec{Integration: s.opts.Integration, Unit: unit, Channel: ch, Start: s.opts.Start, AckWait: s.opts.AckWait}
	rd, err := s.c.OpenFeed(ctx, spec)
	if err != nil {
		return err
	}
	defer rd.Close()
	var current atomic.Pointer[natsjs.FeedMsg]
	stop := keepInProgress(&current, rd, s.opts.AckWait/3)
	defer stop()
	for {
		m, err := rd.Next(ctx)
		if err != nil {
			return err
		}
		current.Store(m)
		s.mu.Lock()
		s.lag[unit+"/"+string(ch)] = m.Pending
		s.mu.Unlock()
		err = s.deliver(ctx, unit, ch, m)
		current.Store(nil) // idle: nothing to keep in progress
		if err != nil {
			return err
		}
	}
}

// keepInProgress tells the server, every period (a third of the ack
// wait), that the change being handled (current) and those delivered
// behind it (rd's) are still in progress, so that a slow handler is not
// raced by redeliveries. It returns its stop.
func keepInProgress(current *atomic.Pointer[natsjs.FeedMsg], rd *natsjs.FeedReader, period time.Duration) (stop func()) {
	tick := time.NewTicker(period)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var last *natsjs.FeedMsg
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				// Only a change seen at two ticks in a row has run that long.
				if m := current.Load(); m != nil && m == last {
					m.InProgress()
					rd.KeepAlive()
				} else {
					last = m
				}
			}
		}
	}()
	return func() { tick.Stop(); close(done); wg.Wait() }
}

// deliver handles one message: unreadable ones stop (newer schema) or are
// dead-lettered (garbage), other kinds are acknowledged unhandled, the
// rest go to the handler.
func (s *Subscription) deliver(ctx context.Context, unit string, ch events.Channel, m *natsjs.FeedMsg) error {
	c := Change{Unit: unit, Channel: ch, Version: m.Version, Delivered: m.Delivered, Envelope: m.Envelope}
	switch {
	case errors.Is(m.DecodeErr, events.ErrUnknownVersion):
		m.Nak() // not handled: the next run (an upgraded build) gets it at once
		return fmt.Errorf("%w: %s version %d: %v", ErrUnreadable, m.Subject, m.Version, m.DecodeErr)
	case m.DecodeErr != nil:
		return s.deadLetter(ctx, m, DeadLetter{Change: c, Tries: 0, Err: m.DecodeErr, Subject: m.Subject})
	case len(s.opts.Kinds) > 0 && !slices.Contains(s.opts.Kinds, m.Envelope.Kind):
		return m.Ack()
	}
	return s.handle(ctx, m, c)
}

// handle calls the handler until it succeeds or has failed MaxTries
// times, keeping the change in progress on the server meanwhile.
func (s *Subscription) handle(ctx context.Context, m *natsjs.FeedMsg, c Change) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = s.opts.RetryInitial, s.opts.RetryMax
	for try := 1; ; try++ {
		err := s.h(ctx, c)
		if err == nil {
			return m.Ack()
		}
		if ctx.Err() != nil {
			return ctx.Err() // not acknowledged: delivered again next run
		}
		if try >= s.opts.MaxTries {
			return s.deadLetter(ctx, m, DeadLetter{Change: c, Tries: try, Err: err, Subject: m.Subject})
		}
		wait := bo.NextBackOff()
		s.opts.Log.Warn("feed: handler failed, retrying", "subject", m.Subject, "version", m.Version, "try", try, "retry_in", wait, "err", err)
		if err := m.InProgress(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// deadLetter hands d to the dead-letter sink, then moves past the change
// for good. A sink that fails stops the subscription with the change
// unacknowledged: nothing is dropped silently.
func (s *Subscription) deadLetter(ctx context.Context, m *natsjs.FeedMsg, d DeadLetter) error {
	if err := s.opts.DeadLetters(ctx, d); err != nil {
		return fmt.Errorf("feed: dead letter for %s: %w", d.Subject, err)
	}
	return m.Term()
}
