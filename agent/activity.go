package agent

import (
	"context"
	"errors"
	"time"

	"github.com/fieldsync/fieldsync/store"
)

// logActivity appends to the activity log (GET /v1/activity): kind, scope,
// start and end, outcome from err, and detail (counts).
func (a *Agent) logActivity(ctx context.Context, kind string, scope Scope, started time.Time, err error, detail map[string]any) {
	outcome := "ok"
	switch {
	case errors.Is(err, ErrResetRefused):
		outcome = "refused"
	case err != nil:
		outcome = "failed"
	}
	if detail == nil {
		detail = map[string]any{}
	}
	if err != nil {
		detail["error"] = err.Error()
	}
	entry := store.Activity{Kind: kind, Scope: string(scope), Started: started, Finished: time.Now(), Outcome: outcome}
	if lerr := a.db.LogActivity(context.WithoutCancel(ctx), entry, detail); lerr != nil {
		a.log.Warn("activity log", "err", lerr)
	}
}

func reportDetail(r Report) map[string]any {
	return map[string]any{"applied": r.Applied, "rejected": r.Rejected, "uploaded": r.Uploaded, "results": r.Results,
		"staged": r.Staged, "updates_available": r.UpdatesAvailable, "resumed": r.Resumed, "discarded": r.Discarded, "received": received(r)}
}

func received(r Report) uint64 {
	var n uint64
	for _, c := range r.Channels {
		n += c.Received
	}
	return n
}

// Activity returns the newest activity log entries.
func (a *Agent) Activity(ctx context.Context, limit int) ([]store.Activity, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	return a.db.Activities(ctx, limit)
}
