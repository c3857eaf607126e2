package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/store"
)

// ErrResetRefused: Sync Now would lose local writes, so nothing was cleared.
var ErrResetRefused = errors.New("agent: sync now refused")

// SyncNow clears the local data and reloads it (see [Syncer.Reset]),
// after uploading every pending write; it refuses with an error wrapping
// [ErrResetRefused] when that is not possible. It waits for the reload.
func (a *Agent) SyncNow(ctx context.Context) (Report, error) {
	defer a.statusChanged()
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	s := a.syncer
	a.running, a.started = ScopeFull, time.Now()
	a.mu.Unlock()
	if s == nil {
		return Report{}, ErrResetRefused
	}
	started := time.Now()
	rep, err := s.Reset(ctx, 30*time.Second)
	a.syncFinished(ctx, ScopeFull, started, err)
	a.logActivity(ctx, "reset", ScopeFull, started, err, reportDetail(rep))
	a.mu.Lock()
	defer a.mu.Unlock()
	a.running = ""
	if err != nil {
		if !errors.Is(err, ErrResetRefused) {
			a.syncFailedLocked(ScopeFull, err)
		}
		return rep, err
	}
	a.syncSucceededLocked(rep.Finished)
	a.planner.Done(ScopeFull, rep.Finished, false)
	a.recordCompletion(context.WithoutCancel(ctx), ScopeFull, rep.Finished, false)
	return rep, nil
}

// Reset is "Sync Now": it uploads every pending write and waits for the
// server to decide each, then clears the local data and reloads it from
// scratch. Checking that no write is left unconfirmed and clearing are
// one store transaction ([store.DB.WipeConfirmed]): a write made
// meanwhile makes Reset settle again (up to resetAttempts times) instead
// of being cleared. It refuses, clearing nothing, when the server cannot
// be reached, when a write stays unconfirmed, or when sync errors wait
// for the user: local writes are never thrown away silently. Device
// settings ([store.SettingPrefix]) are kept.
func (s *Syncer) Reset(ctx context.Context, confirmWait time.Duration) (Report, error) {
	if err := s.Handshake(ctx); err != nil {
		return Report{}, fmt.Errorf("%w: the server cannot be reached, so pending writes cannot be uploaded first: %w", ErrResetRefused, err)
	}
	deadline := time.Now().Add(confirmWait)
	for attempt := 1; ; attempt++ {
		if err := s.settleWrites(ctx, time.Until(deadline)); err != nil {
			return Report{}, err
		}
		if s.beforeWipe != nil {
			s.beforeWipe(attempt)
		}
		r, err := s.db.WipeConfirmed(ctx, resetKeeps()...)
		switch {
		case err == nil:
			s.log.Info("sync now: local data cleared, reloading", "records", r.Records, "unsent", r.Unsent)
			return s.Sync(ctx, ScopeFull)
		case !errors.Is(err, store.ErrUnconfirmed):
			return Report{}, err
		case attempt == resetAttempts:
			return Report{}, fmt.Errorf("%w: local writes keep arriving faster than the server confirms them; try again: %w", ErrResetRefused, err)
		}
		s.log.Debug("sync now: a local write arrived while settling, settling again", "attempt", attempt)
	}
}

// resetKeeps are the meta keys Sync Now keeps besides device settings:
// when the device was last used (the retention count), the results
// stream position, and when each automatic sync last ran (a manual sync
// never moves the schedule).
func resetKeeps() []string {
	keep := []string{metaLastUsed, "results_seq"}
	for _, s := range []Scope{ScopeFull, ScopeEvents, ScopeAdmin, ScopeDocuments} {
		keep = append(keep, autoKey(s))
	}
	return keep
}

// resetAttempts bounds how often Reset settles again because local writes
// arrived between settling and clearing.
const resetAttempts = 5

// settleWrites uploads queued writes and applies results until none is
// unconfirmed, or refuses. It looks for results again after 5 ms, then
// less often, up to every 50 ms.
func (s *Syncer) settleWrites(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for poll := 5 * time.Millisecond; ; poll = min(2*poll, 50*time.Millisecond) {
		if _, err := s.Upload(ctx); err != nil {
			return fmt.Errorf("%w: uploading pending writes failed: %w", ErrResetRefused, err)
		}
		if _, err := s.Results(ctx); err != nil {
			return fmt.Errorf("%w: reading write results failed: %w", ErrResetRefused, err)
		}
		c, err := s.db.OutboxCounts(ctx)
		if err != nil {
			return err
		}
		if n := c[store.StateConflict] + c[store.StateRejected]; n > 0 {
			return fmt.Errorf("%w: %d sync errors wait for you; resolve them first (device-agent conflicts)", ErrResetRefused, n)
		}
		if c[store.StateQueued]+c[store.StateSent] == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %d writes were sent but the server has not confirmed them yet; try again", ErrResetRefused, c[store.StateQueued]+c[store.StateSent])
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}
