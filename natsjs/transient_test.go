package natsjs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestTransient(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want bool
	}{
		{live, nil, false},
		{live, context.DeadlineExceeded, true}, // the client's own timeout, the caller's ctx alive
		{live, fmt.Errorf("stream info: %w", context.DeadlineExceeded), true},
		{done, context.DeadlineExceeded, false}, // the caller gave up
		{live, nats.ErrNoResponders, true},
		{live, nats.ErrTimeout, true},
		{live, &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{live, &jetstream.APIError{Code: 500, ErrorCode: jsStreamOffline, Description: "stream is offline"}, true},
		{live, &jetstream.APIError{Code: 500, ErrorCode: jsConsumerOffline, Description: "consumer is offline"}, false}, // re-created, not waited for
		{live, jetstream.ErrConsumerNotFound, false},
		{live, jetstream.ErrStreamNotFound, false},
		{live, &jetstream.APIError{Code: 400, Description: "bad request"}, false},
		{live, errors.New("permission denied"), false},
	} {
		if got := transient(tc.ctx, tc.err); got != tc.want {
			t.Errorf("transient(%v, ctx err %v) = %v, want %v", tc.err, tc.ctx.Err(), got, tc.want)
		}
	}
}

func TestRetryTransient(t *testing.T) {
	ctx := context.Background()
	calls := 0
	v, err := retryTransient(ctx, 10*time.Second, func() (int, error) {
		if calls++; calls < 3 {
			return 0, nats.ErrNoResponders
		}
		return 42, nil
	})
	if v != 42 || err != nil || calls != 3 {
		t.Fatalf("two transient failures then success: %d %v after %d calls", v, err, calls)
	}
	calls = 0
	if _, err := retryTransient(ctx, 10*time.Second, func() (int, error) {
		calls++
		return 0, jetstream.ErrConsumerNotFound
	}); !errors.Is(err, jetstream.ErrConsumerNotFound) || calls != 1 {
		t.Fatalf("permanent error: %v after %d calls, want it at once", err, calls)
	}
	start := time.Now()
	if _, err := retryTransient(ctx, 600*time.Millisecond, func() (int, error) {
		return 0, context.DeadlineExceeded
	}); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("transient for ever: %v after %s, want it back after the limit", err, time.Since(start))
	}
}
