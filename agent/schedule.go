package agent

import "time"

// Schedule is the automatic sync plan, after the seeds: a delta sync of
// everything every Delta from the last automatic completion (the mustering
// app's 30 minutes), optional per-category schedules (the compliance app's
// "Sync Events / Admin / Documents every X"), and an optional reminder
// before an automatic sync starts.
type Schedule struct {
	// Delta is the period of the automatic full delta sync (0: off).
	Delta     time.Duration `yaml:"delta"`
	Events    time.Duration `yaml:"events"`
	Admin     time.Duration `yaml:"admin"`
	Documents time.Duration `yaml:"documents"`
	// Remind announces an automatic sync this long before it starts (0: no
	// reminder).
	Remind time.Duration `yaml:"remind"`
}

// Due is the next automatic sync.
type Due struct {
	Scope  Scope     `json:"scope"`
	At     time.Time `json:"at"`
	Remind time.Time `json:"remind_at,omitempty"`
	Reason string    `json:"reason"`
}

// Planner decides when automatic syncs run. It holds no clock: callers
// pass the time, so tests step it at will.
type Planner struct {
	s        Schedule
	lastAuto map[Scope]time.Time
	lastAny  time.Time
	// origin is where a scope that never ran automatically counts from.
	origin   time.Time
	startDay bool
}

// NewPlanner returns a planner that knows when each automatic scope last
// completed and when any sync last did. Started on a day with no sync yet
// (or before the first sync ever), it plans a full sync at once: the
// seeds' "first sign-in of the day" sync.
func NewPlanner(s Schedule, lastAuto map[Scope]time.Time, lastAny, now time.Time) *Planner {
	p := &Planner{s: s, lastAuto: map[Scope]time.Time{}, lastAny: lastAny, origin: lastAny}
	for k, v := range lastAuto {
		p.lastAuto[k] = v
	}
	p.startDay = lastAny.IsZero() || !sameDay(lastAny, now)
	return p
}

func sameDay(a, b time.Time) bool {
	ay, am, ad := a.Local().Date()
	by, bm, bd := b.Local().Date()
	return ay == by && am == bm && ad == bd
}

// Next returns the next automatic sync as seen at now.
func (p *Planner) Next(now time.Time) Due {
	if p.startDay {
		reason := "first start of the day"
		if p.lastAny.IsZero() {
			reason = "first sign-in"
		}
		return Due{Scope: ScopeFull, At: now, Reason: reason}
	}
	best := Due{}
	for _, c := range []struct {
		scope  Scope
		period time.Duration
		reason string
	}{{ScopeFull, p.s.Delta, "delta sync"}, {ScopeEvents, p.s.Events, "events schedule"},
		{ScopeAdmin, p.s.Admin, "admin schedule"}, {ScopeDocuments, p.s.Documents, "documents schedule"}} {
		if c.period <= 0 {
			continue
		}
		base := p.lastAuto[c.scope]
		if base.IsZero() {
			base = p.origin
		}
		if at := base.Add(c.period); best.At.IsZero() || at.Before(best.At) {
			best = Due{Scope: c.scope, At: at, Reason: c.reason}
		}
	}
	if !best.At.IsZero() && p.s.Remind > 0 {
		best.Remind = best.At.Add(-p.s.Remind)
	}
	return best
}

// Done records a completed sync. Only automatic syncs move the schedule:
// a manual sync never shifts the next planned one. A full sync counts for
// every category.
func (p *Planner) Done(scope Scope, at time.Time, automatic bool) {
	p.lastAny, p.startDay = at, false
	if p.origin.IsZero() {
		p.origin = at
	}
	if !automatic {
		return
	}
	p.lastAuto[scope] = at
	if scope == ScopeFull {
		for _, s := range []Scope{ScopeEvents, ScopeAdmin, ScopeDocuments} {
			p.lastAuto[s] = at
		}
	}
}
