package agent

import (
	"context"
	"errors"
	"time"
)

// metaLastUsed is when the agent was last used: a sign-in or a call of the
// local API by the app.
const metaLastUsed = "last_used_at"

// touchEvery bounds how often API use is recorded.
const touchEvery = time.Minute

// SignIn signs user in on the device. Online, the server checks the user
// against the Admin data (known, not disabled, assigned to this device's
// org units): a refusal is an error wrapping [ErrSignInRefused] that says
// why, and changes nothing; an accepted user's assignments decide the
// device's units from then on ([events.Grant]). Offline, only the user
// already signed in may sign in again ([ErrOffline] otherwise). Then the
// retention count starts again, and the first sign-in of a day starts a
// sync, as in the seeds.
func (a *Agent) SignIn(ctx context.Context, user string) error {
	if err := a.checkSignIn(ctx, user); err != nil {
		a.log.Warn("sign-in refused", "user", user, "err", err)
		return err
	}
	a.log.Info("sign-in", "user", user)
	a.mu.Lock()
	first := a.completed.IsZero() || !sameDay(a.completed, a.now())
	a.mu.Unlock()
	if first {
		if err := a.RequestSync(ScopeFull); err != nil && !errors.Is(err, ErrSyncPending) {
			return err
		}
	}
	return a.touch(ctx, true)
}

// Touch records use of the agent (throttled to once a minute).
func (a *Agent) Touch(ctx context.Context) error { return a.touch(ctx, false) }

func (a *Agent) touch(ctx context.Context, force bool) error {
	now := a.now()
	a.mu.Lock()
	if !force && now.Sub(a.touched) < touchEvery {
		a.mu.Unlock()
		return nil
	}
	a.touched = now
	a.mu.Unlock()
	return a.db.SetMeta(ctx, metaLastUsed, now.UTC().Format(time.RFC3339Nano))
}

// enforceRetention wipes the device's data when the agent has not been
// used for RetentionDays, as the mustering app does after ten days. The
// wipe is logged with the number of records and of unsent writes lost.
func (a *Agent) enforceRetention(ctx context.Context) error {
	if a.cfg.RetentionDays <= 0 {
		return nil
	}
	v, err := a.db.Meta(ctx, metaLastUsed)
	if err != nil || v == "" {
		return a.touch(ctx, true) // first start: the count begins now
	}
	last, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return a.touch(ctx, true)
	}
	limit := time.Duration(a.cfg.RetentionDays) * 24 * time.Hour
	if unused := a.now().Sub(last); unused > limit {
		r, err := a.db.Wipe(ctx)
		if err != nil {
			return err
		}
		a.completed = time.Time{}
		a.log.Warn("retention wipe: device unused too long, local data removed",
			"unused", unused.Round(time.Hour), "limit_days", a.cfg.RetentionDays, "records", r.Records, "unsent_writes", r.Unsent)
		a.wiped = &r
		a.logActivity(ctx, "wipe", "", a.now(), nil, map[string]any{"records": r.Records, "unsent_writes": r.Unsent,
			"unused_hours": int(unused.Hours()), "limit_days": a.cfg.RetentionDays})
		return a.touch(ctx, true)
	}
	return nil
}

// purgeRetained removes accepted device-created events whose retention
// ended (retain_events_days): at start, then every
// RetentionPurgeInterval. Retention is counted in days, so minutes of
// delay cost nothing, and an idle device makes no write in between.
func (a *Agent) purgeRetained(ctx context.Context) {
	t := time.NewTicker(a.cfg.RetentionPurgeInterval)
	defer t.Stop()
	for {
		if n, err := a.db.PurgeRetained(ctx, time.Now()); err != nil && ctx.Err() == nil {
			a.log.Warn("purge retained events", "err", err)
		} else if n > 0 {
			a.log.Info("retained events removed", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
