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

// Reset is "Sync Now": it uploads every pending write and waits for the
// server to decide each, then clears the local data and reloads it from
// scratch. It refuses, clearing nothing, when the server cannot be reached,
// when a write stays unconfirmed, or when sync errors wait for the user:
// local writes are never thrown away silently.
func (s *Syncer) Reset(ctx context.Context, confirmWait time.Duration) (Report, error) {
	if err := s.Handshake(ctx); err != nil {
		return Report{}, fmt.Errorf("%w: the server cannot be reached, so pending writes cannot be uploaded first: %v", ErrResetRefused, err)
	}
	if err := s.settleWrites(ctx, confirmWait); err != nil {
		return Report{}, err
	}
	r, err := s.db.Wipe(ctx, metaLastUsed, "results_seq")
	if err != nil {
		return Report{}, err
	}
	s.log.Info("sync now: local data cleared, reloading", "records", r.Records)
	return s.Sync(ctx, ScopeFull)
}

// settleWrites uploads queued writes and applies results until none is
// unconfirmed, or refuses.
func (s *Syncer) settleWrites(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		if _, err := s.Upload(ctx); err != nil {
			return fmt.Errorf("%w: uploading pending writes failed: %v", ErrResetRefused, err)
		}
		if _, err := s.Results(ctx); err != nil {
			return fmt.Errorf("%w: reading write results failed: %v", ErrResetRefused, err)
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
		case <-time.After(50 * time.Millisecond):
		}
	}
}
