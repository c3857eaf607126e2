package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/retry"
)

// idleAgent is an agent with no automatic schedule: its next sync is only
// ever a retry after a failure.
func idleAgent(interval time.Duration) *Agent {
	now := time.Now()
	return &Agent{cfg: Config{SyncInterval: interval}, planner: NewPlanner(Schedule{}, nil, now, now)}
}

// failNow records a failed sync and returns how long until its retry.
func (a *Agent) failNow(t *testing.T, err error) time.Duration {
	t.Helper()
	a.mu.Lock()
	a.syncFailedLocked(ScopeFull, err)
	a.mu.Unlock()
	due, _ := a.plan()
	if due.Reason != "retry after failure" || due.Scope != ScopeFull {
		t.Fatalf("next sync after a failure: %+v", due)
	}
	return time.Until(due.At)
}

// within fails unless d is within the jitter of interval iv (give or take
// the few milliseconds between planning and measuring).
func within(t *testing.T, what string, d, iv time.Duration) {
	t.Helper()
	lo, hi := time.Duration(float64(iv)*(1-retry.Jitter))-100*time.Millisecond, time.Duration(float64(iv)*(1+retry.Jitter))
	if d < lo || d > hi {
		t.Fatalf("%s: retry in %v, want within [%v, %v]", what, d, lo, hi)
	}
}

// TestAgent_Plan_RetryBacksOff: after each failure in a row the retry
// waits about twice as long, jittered, never beyond the maximum; a success
// starts again from the first wait.
func TestAgent_Plan_RetryBacksOff(t *testing.T) {
	offline := errors.New("broker unreachable")
	a := idleAgent(30 * time.Minute) // first wait: the interval clamped to 1 min
	capped := time.Duration(float64(maxRetryWait) / (1 + retry.Jitter))
	var waits []time.Duration
	for n := range 12 {
		d := a.failNow(t, offline)
		within(t, fmt.Sprintf("failure %d", n+1), d, min(time.Minute<<n, capped))
		if d > maxRetryWait {
			t.Fatalf("failure %d: retry in %v, beyond the maximum %v", n+1, d, maxRetryWait)
		}
		waits = append(waits, d)
	}
	if waits[3] <= waits[0] {
		t.Fatalf("retry waits do not grow: %v", waits)
	}

	a.mu.Lock()
	a.syncSucceededLocked(time.Now())
	a.mu.Unlock()
	if due, _ := a.plan(); due.Reason == "retry after failure" {
		t.Fatalf("after a success the next sync is still a retry: %+v", due)
	}
	within(t, "first failure after a success", a.failNow(t, offline), time.Minute)

	// A server this build cannot sync with is retried far less often.
	inc := fmt.Errorf("hello: %w", events.ErrIncompatible)
	within(t, "incompatible server", idleAgent(time.Minute).failNow(t, inc), incompatibleRetryWait)
}

// TestAgent_Plan_RetryJittered: two agents that fail together do not
// retry together.
func TestAgent_Plan_RetryJittered(t *testing.T) {
	a, b := idleAgent(30*time.Minute), idleAgent(30*time.Minute)
	offline := errors.New("broker unreachable")
	same := 0
	for range 8 {
		if a.failNow(t, offline).Round(time.Millisecond) == b.failNow(t, offline).Round(time.Millisecond) {
			same++
		}
	}
	if same == 8 {
		t.Fatal("two agents retry on the same schedule")
	}
	// The floor: a tiny sync interval still waits about a second.
	within(t, "sync interval 10ms", idleAgent(10*time.Millisecond).failNow(t, offline), time.Second)
}
