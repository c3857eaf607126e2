package natsjs

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// transient reports whether err, from a JetStream API call made under
// ctx, is what a cluster answers while it is electing a leader after a
// node was lost: the request timed out while ctx is still alive (the
// client's own default timeout), nobody answered, or the API said it is
// unavailable for now (HTTP-like code 503). Such a call succeeds again
// a few seconds later, when the stream or consumer has a new leader.
func transient(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoHeartbeat) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == jsStreamOffline)
}

// Error codes of nats-server's JetStream API (server/errors.json) that
// nats.go has no constant for.
const (
	jsStreamOffline   = 10118 // a stream with no leader reachable
	jsConsumerOffline = 10119 // a durable whose node is down
)

// offline reports whether err says the durable itself (not the stream)
// has no reachable node: nats-server answers "consumer is offline" for an
// R1 durable whose node is down.
func offline(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsConsumerOffline
}

// denied reports whether nc's last error is the broker refusing a
// request on stream: a JetStream request to a subject the user may not
// publish to is never answered, so it looks like a timeout (the refusal
// comes apart, as the connection's last error) and must not be waited
// out as a leader election.
func denied(nc *nats.Conn, stream string) bool {
	err := nc.LastError()
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "."+stream)
}

// leaderElectionWait is how long [retryTransient] keeps trying by
// default: nats-server elects a new stream or consumer leader within a
// few seconds (its Raft election timeouts are 4 to 9 s), twice that for
// the meta leader and a stream leader lost together.
const leaderElectionWait = 20 * time.Second

// retryTransient calls fn until it succeeds, fails with an error that is
// not [transient], ctx ends or limit has passed (0: leaderElectionWait),
// waiting a little longer between tries (from 250 ms, jittered): a sync
// started while the cluster elects leaders waits for them instead of
// failing.
func retryTransient[T any](ctx context.Context, limit time.Duration, fn func() (T, error)) (T, error) {
	if limit <= 0 {
		limit = leaderElectionWait
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 250*time.Millisecond, 2*time.Second
	return backoff.Retry(ctx, func() (T, error) {
		v, err := fn()
		if err != nil && !transient(ctx, err) {
			return v, backoff.Permanent(err)
		}
		return v, err
	}, backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(limit))
}
