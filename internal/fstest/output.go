package fstest

import (
	"bytes"
	"regexp"
	"sync"
	"testing"
	"time"
)

// Output collects what a component prints from its goroutines, for a test
// to wait on.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// Wait waits up to timeout until re matches what was written and returns
// the match, failing the test with the output otherwise.
func (o *Output) Wait(tb testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(o.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no output matching %s in %v; got %q", re, timeout, o.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
