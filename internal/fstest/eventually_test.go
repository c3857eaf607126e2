package fstest

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestEventually(t *testing.T) {
	var n atomic.Int32
	Eventually(t, 5*time.Second, func() bool { return n.Add(1) >= 3 }, "cond never true")
	if got := n.Load(); got != 3 {
		t.Fatalf("cond called %d times, want 3 (returns as soon as it holds)", got)
	}
	ft := &fakeTB{TB: t}
	func() {
		defer func() { _ = recover() }()
		Eventually(ft, 20*time.Millisecond, func() bool { return false }, "never %s", "true")
	}()
	if ft.failed == "" {
		t.Fatal("Eventually did not fail for a condition that never held")
	}
}

type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = format
	panic("fatal")
}
