package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/fieldsync/fieldsync/store"
)

func autoKey(s Scope) string { return "auto_last:" + string(s) }

func loadAutoTimes(ctx context.Context, db *store.DB) map[Scope]time.Time {
	out := map[Scope]time.Time{}
	for _, s := range []Scope{ScopeFull, ScopeEvents, ScopeAdmin, ScopeDocuments} {
		if v, _ := db.Meta(ctx, autoKey(s)); v != "" {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				out[s] = t
			}
		}
	}
	return out
}

// loop runs the planned automatic syncs, the reminders before them, and
// the syncs requested with [Agent.RequestSync], one at a time.
func (a *Agent) loop(ctx context.Context) error {
	for {
		due, remind := a.plan()
		a.statusChanged() // the next sync, the reminder, the last one's outcome
		wake := due.At
		if remind {
			wake = due.Remind
		}
		timer := time.NewTimer(time.Until(wake))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case scope := <-a.requests:
			timer.Stop()
			a.runSync(ctx, scope, false)
		case <-timer.C:
			if remind {
				a.setReminder(due)
				continue
			}
			a.runSync(ctx, due.Scope, true)
		}
	}
}

// plan returns the next automatic sync and whether its reminder is still
// to be announced. After a failure the failed sync is retried after a
// jittered wait that grows with each failure in a row (see [syncRetry]).
func (a *Agent) plan() (Due, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	due := a.planner.Next(now)
	if a.lastErr != nil {
		due = Due{Scope: a.failed, At: a.retryAt, Reason: "retry after failure"}
	}
	if due.At.IsZero() { // no automatic sync configured: wait for requests
		due = Due{Scope: ScopeFull, At: now.Add(24 * time.Hour), Reason: "idle"}
	}
	a.next = due
	remind := !due.Remind.IsZero() && now.Before(due.Remind) && (a.reminder == nil || !a.reminder.At.Equal(due.At))
	return due, remind
}

func (a *Agent) setReminder(d Due) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reminder = &d
	a.log.Info("sync reminder", "scope", d.Scope, "starts_at", d.At)
}

func (a *Agent) runSync(ctx context.Context, scope Scope, automatic bool) {
	defer a.statusChanged()
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	if kind := a.client.AuthError(); kind != "" {
		a.syncFailedLocked(scope, fmt.Errorf("%w (%s)", ErrAuthRefused, kind))
		a.log.Warn("sync not started: the broker refuses the credentials", "scope", scope, "kind", kind, "retry_at", a.retryAt)
		a.mu.Unlock()
		return
	}
	a.running, a.started, a.reminder = scope, time.Now(), nil
	syncer := a.syncer
	a.mu.Unlock()
	a.log.Info("sync started", "scope", scope, "automatic", automatic)
	started := time.Now()
	rep, err := syncer.Sync(ctx, scope)
	a.syncFinished(ctx, scope, started, err)
	d := reportDetail(rep)
	d["automatic"] = automatic
	a.logActivity(ctx, "sync", scope, rep.Started, err, d)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.running, a.report = "", &rep
	if err != nil {
		if ctx.Err() == nil {
			a.syncFailedLocked(scope, err)
			a.log.Error("sync failed", "scope", scope, "err", err, "retry_at", a.retryAt)
		}
		return
	}
	a.syncSucceededLocked(rep.Finished)
	a.planner.Done(scope, rep.Finished, automatic)
	a.log.Info("sync completed", "scope", scope, "applied", rep.Applied, "uploaded", rep.Uploaded, "took", rep.Finished.Sub(rep.Started).Round(time.Millisecond))
	a.recordCompletion(context.WithoutCancel(ctx), scope, rep.Finished, automatic)
}

func (a *Agent) recordCompletion(ctx context.Context, scope Scope, at time.Time, automatic bool) {
	stamp := at.UTC().Format(time.RFC3339Nano)
	keys := []string{metaLastCompleted}
	if automatic {
		keys = append(keys, autoKey(scope))
	}
	if v, _ := a.db.Meta(ctx, metaInitialDone); v == "" && scope == ScopeFull {
		keys = append(keys, metaInitialDone)
	}
	for _, k := range keys {
		if err := a.db.SetMeta(ctx, k, stamp); err != nil {
			a.log.Error("record sync completion", "key", k, "err", err)
		}
	}
}
