package fstest

import (
	"testing"
	"time"
)

// Eventually calls cond every few milliseconds until it returns true, and
// fails the test with msg (formatted with args) if that has not happened
// within timeout. It is the one wait loop of fieldsync's tests: use it
// instead of sleeps and hand-written deadline loops.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(wait)
	}
}
