package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// Write applies a local change to the live view, queues it, and wakes the
// autosync so it goes up within a moment while online.
func (a *Agent) Write(ctx context.Context, r WriteRequest) (store.Mutation, error) {
	s := a.currentSyncer()
	m, err := s.Write(ctx, r)
	if err == nil {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	return m, err
}

// Conflicts returns the sync errors of local writes.
func (a *Agent) Conflicts(ctx context.Context) ([]store.Conflict, error) { return a.db.Conflicts(ctx) }

// Resolve settles a sync error: store.ResolveUndo, ResolveUndelete or
// ResolveRetry. Undelete and Retry queue a new write, sent by autosync.
func (a *Agent) Resolve(ctx context.Context, mutationID, action string) (*store.Mutation, error) {
	m, err := a.db.Resolve(ctx, mutationID, action, newMutationID(), time.Now())
	if err == nil && m != nil {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	return m, err
}

// currentSyncer is the syncer of the running agent, or one that can queue
// writes locally before Run has connected.
func (a *Agent) currentSyncer() *Syncer {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.syncer == nil {
		return NewSyncer(a.cfg, nil, a.db, a.log)
	}
	return a.syncer
}

// autosync sends queued writes and applies their results every
// AutosyncInterval (or at once after a local write) while connected, and
// purges retained events whose time is up.
func (a *Agent) autosync(ctx context.Context, s *Syncer) {
	t := time.NewTicker(a.cfg.AutosyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.wake:
		}
		if err := a.autosyncOnce(ctx, s); err != nil && ctx.Err() == nil {
			a.log.Debug("autosync", "err", err)
		}
	}
}

func (a *Agent) autosyncOnce(ctx context.Context, s *Syncer) error {
	if n, err := a.db.PurgeRetained(ctx, time.Now()); err != nil {
		return err
	} else if n > 0 {
		a.log.Info("retained events removed", "count", n)
	}
	if !s.client.Connected() || a.incompatible() {
		return nil
	}
	started := time.Now()
	up, err := s.Upload(ctx)
	if up > 0 || err != nil {
		a.logActivity(ctx, "upload", "", started, err, map[string]any{"uploaded": up})
	}
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	res, err := s.Results(ctx)
	if up > 0 || res > 0 {
		a.log.Info("autosync", "uploaded", up, "results", res)
	}
	return err
}

// incompatible reports whether the last sync found the server's protocol
// incompatible: then nothing is uploaded either.
func (a *Agent) incompatible() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return errors.Is(a.lastErr, events.ErrIncompatible)
}
