package agent

import (
	"errors"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/retry"
)

// Waits before an automatic sync retries a failed one: jittered
// exponential backoff, so that a fleet coming back from an outage does not
// retry in lock-step. The first retry of an ordinary failure comes after
// about the sync interval, clamped to [1s, 1 min]; a server this build
// cannot sync with is retried from about 5 minutes on.
const (
	maxRetryWait          = 10 * time.Minute
	incompatibleRetryWait = 5 * time.Minute
	maxIncompatibleWait   = time.Hour
)

// syncRetry plans the retries of failed syncs. Not safe for concurrent
// use: the agent holds its mu.
type syncRetry struct {
	failure, incompatible *backoff.ExponentialBackOff
}

func newSyncRetry(interval time.Duration) *syncRetry {
	first := min(max(interval, time.Second), time.Minute)
	return &syncRetry{failure: retry.Policy{Initial: first, Max: maxRetryWait}.New(),
		incompatible: retry.Policy{Initial: incompatibleRetryWait, Max: maxIncompatibleWait}.New()}
}

// after returns the wait before retrying a sync that failed with err; each
// failure in a row waits about twice as long as the one before.
func (r *syncRetry) after(err error) time.Duration {
	if errors.Is(err, events.ErrIncompatible) {
		return r.incompatible.NextBackOff()
	}
	return r.failure.NextBackOff()
}

// reset starts again from the shortest waits (after a sync succeeded).
func (r *syncRetry) reset() {
	r.failure.Reset()
	r.incompatible.Reset()
}

// syncFailedLocked records a failed sync of scope and plans its retry.
// a.mu is held.
func (a *Agent) syncFailedLocked(scope Scope, err error) {
	if a.retry == nil {
		a.retry = newSyncRetry(a.cfg.SyncInterval)
	}
	a.lastErr, a.failed = err, scope
	a.retryAt = time.Now().Add(a.retry.after(err))
}

// syncSucceededLocked records a sync that completed at done. a.mu is held.
func (a *Agent) syncSucceededLocked(done time.Time) {
	a.lastErr, a.completed = nil, done
	kick(a.docsChanged) // the sync may have changed documents the device has
	if a.retry != nil {
		a.retry.reset()
	}
}
