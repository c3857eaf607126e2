package agent

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 20, 8, 0, 0, 0, time.Local)

func TestPlanner_Next_DeltaEvery30Minutes(t *testing.T) {
	p := NewPlanner(Schedule{Delta: 30 * time.Minute}, nil, time.Time{}, t0)
	if d := p.Next(t0); d.Scope != ScopeFull || !d.At.Equal(t0) || d.Reason != "first sign-in" {
		t.Fatalf("before any sync: %+v, want a full sync now", d)
	}
	now := t0
	for i := 0; i < 4; i++ {
		d := p.Next(now)
		if i > 0 && !d.At.Equal(now) {
			t.Fatalf("run %d due at %s, want %s", i, d.At.Format(time.Kitchen), now.Format(time.Kitchen))
		}
		done := now.Add(2 * time.Minute) // each sync takes two minutes
		p.Done(d.Scope, done, true)
		now = done.Add(30 * time.Minute) // 30 minutes from the last completion
		if got := p.Next(done); !got.At.Equal(now) || got.Scope != ScopeFull {
			t.Fatalf("after a sync completed at %s: next %+v, want %s", done.Format(time.Kitchen), got, now.Format(time.Kitchen))
		}
	}
}

func TestPlanner_Done_ManualDoesNotShiftSchedule(t *testing.T) {
	p := NewPlanner(Schedule{Delta: 30 * time.Minute}, nil, time.Time{}, t0)
	p.Done(ScopeFull, t0, true)
	want := t0.Add(30 * time.Minute)
	p.Done(ScopeFull, t0.Add(12*time.Minute), false) // the user presses Sync
	p.Done(ScopeEvents, t0.Add(20*time.Minute), false)
	if d := p.Next(t0.Add(21 * time.Minute)); !d.At.Equal(want) {
		t.Fatalf("after manual syncs the next automatic one is %s, want unchanged %s", d.At.Format(time.Kitchen), want.Format(time.Kitchen))
	}
}

func TestPlanner_Next_PerCategory(t *testing.T) {
	s := Schedule{Events: time.Hour, Admin: 4 * time.Hour, Documents: 3 * time.Hour, Remind: 5 * time.Minute}
	p := NewPlanner(s, nil, t0, t0) // synced today already: no start-of-day sync
	now := t0
	var ran []Scope
	for now.Before(t0.Add(5 * time.Hour)) {
		d := p.Next(now)
		if d.Scope == ScopeFull {
			t.Fatalf("per-category schedule planned a full sync: %+v", d)
		}
		if !d.Remind.Equal(d.At.Add(-5 * time.Minute)) {
			t.Fatalf("reminder at %s for a sync at %s", d.Remind, d.At)
		}
		now = d.At
		ran = append(ran, d.Scope)
		p.Done(d.Scope, now, true)
	}
	want := []Scope{ScopeEvents, ScopeEvents, ScopeEvents, ScopeDocuments, ScopeEvents, ScopeAdmin}
	if len(ran) < len(want) {
		t.Fatalf("ran %v", ran)
	}
	for i, w := range want {
		if ran[i] != w {
			t.Fatalf("run order %v, want %v first", ran, want)
		}
	}
}

func TestNewPlanner_FirstStartOfTheDay(t *testing.T) {
	yesterday := t0.Add(-20 * time.Hour)
	p := NewPlanner(Schedule{Delta: 30 * time.Minute}, map[Scope]time.Time{ScopeFull: yesterday}, yesterday, t0)
	if d := p.Next(t0); d.Scope != ScopeFull || !d.At.Equal(t0) || d.Reason != "first start of the day" {
		t.Fatalf("first start of a new day: %+v", d)
	}
	sameDay := NewPlanner(Schedule{Delta: 30 * time.Minute}, map[Scope]time.Time{ScopeFull: t0}, t0, t0.Add(time.Hour))
	if d := sameDay.Next(t0.Add(time.Hour)); d.Reason == "first start of the day" {
		t.Fatalf("a restart later the same day is not a first start: %+v", d)
	}
}
