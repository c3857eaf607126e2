package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/retry"
	"github.com/fieldsync/fieldsync/natsjs"
)

// Ingester applies device uploads. Several may run against one broker (one
// per node): they share the durable and each upload goes to one of them.
type Ingester struct {
	client   *natsjs.Client
	pub      *natsjs.Publisher
	rights   Rights
	access   Authorizer
	policy   natsjs.IngestPolicy
	retry    retry.Policy
	onRes    func(*events.Result)
	onHealth func(error)
	log      *slog.Logger
	workers  int
	now      func() time.Time
	mlog     *natsjs.MutationLog
	// onHandled, if set, runs after each upload is acknowledged (tests).
	onHandled func(u *natsjs.Upload)
	// onRetry, if set, runs when an upload is handed back for redelivery
	// after delay (tests).
	onRetry func(u *natsjs.Upload, delay time.Duration)
}

// DefaultRetry spaces ingest's retries when [Options.Retry] is unset: from
// about a second up to half a minute.
var DefaultRetry = retry.Policy{Initial: time.Second, Max: 30 * time.Second}

// Options tune an [Ingester].
type Options struct {
	Rights Rights
	// Access, if set, also decides each write (the broker's view of the
	// device's current org units and its user's role permissions).
	Access Authorizer
	// Policy is the upload side's policy (its AckWait is used).
	Policy natsjs.IngestPolicy
	// OnResult, if set, is told of every result published (metrics).
	OnResult func(*events.Result)
	// OnHealth, if set, is told nil each time ingest starts reading uploads,
	// and the error each time it stops because the upload consumer (or the
	// broker) failed; ingest then re-creates its durable by itself, after
	// the waits of Retry. Calls come from Run's goroutine, one at a time.
	OnHealth func(err error)
	// Retry spaces ingest's retries with jittered exponential backoff (see
	// [retry.Policy]): an upload that could not be decided is redelivered
	// after a wait that grows with its delivery count, and the upload
	// consumer is re-created after a wait that grows with each failure in a
	// row. Unset fields take [DefaultRetry]'s.
	Retry retry.Policy
	// Workers process uploads in parallel; uploads of one record always go
	// to the same worker, in order (default 256: a worker mostly waits for
	// the broker, so the count bounds how many uploads are in flight).
	Workers int
	Log     *slog.Logger
}

// New returns an ingester on client.
func New(client *natsjs.Client, o Options) *Ingester {
	if o.Workers <= 0 {
		o.Workers = 256
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Ingester{client: client, pub: client.Publisher(), rights: o.Rights.withDefaults(), access: o.Access, policy: o.Policy,
		retry: o.Retry.WithDefaults(DefaultRetry), onRes: o.OnResult, onHealth: o.OnHealth, log: o.Log, workers: o.Workers, now: time.Now}
}

// Run ingests until ctx is cancelled, then returns nil; uploads in flight
// when it stops are redelivered to the next run (or another node). When
// the upload consumer fails — its durable deleted, heartbeats missing, the
// broker gone — Run reports it to [Options.OnHealth], waits (see
// [Options.Retry]) and binds its durable again, creating it if it is gone;
// a re-created durable reads the retained uploads again, which the results
// stream answers without applying anything twice.
func (in *Ingester) Run(ctx context.Context) error {
	queues := make([]chan *natsjs.Upload, in.workers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan *natsjs.Upload, 256)
		wg.Add(1)
		go func(q <-chan *natsjs.Upload) {
			defer wg.Done()
			for u := range q {
				in.handle(ctx, u)
			}
		}(queues[i])
	}
	defer func() {
		for _, q := range queues {
			close(q)
		}
		wg.Wait()
	}()
	bo := in.retry.New()
	for {
		started := time.Now()
		got, err := in.read(ctx, queues)
		if ctx.Err() != nil {
			return nil
		}
		if got || time.Since(started) > in.retry.Max {
			bo.Reset() // it had recovered: start again from the shortest wait
		}
		wait := bo.NextBackOff()
		in.log.Error("ingest down, will bind its durable again", "err", err, "retry_in", wait.Round(time.Millisecond))
		in.health(err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// read binds the upload consumer and hands uploads to the workers until
// the consumer fails or ctx ends. got says whether any upload came.
func (in *Ingester) read(ctx context.Context, queues []chan *natsjs.Upload) (got bool, err error) {
	if in.mlog == nil { // set once, before any upload reaches a worker
		if in.mlog, err = in.client.MutationLog(ctx); err != nil {
			return false, err
		}
	}
	rd, err := in.client.OpenIngest(ctx, in.policy)
	if err != nil {
		return false, err
	}
	defer rd.Close()
	in.health(nil)
	for {
		// One at a time: the workers queue, so batching here would only
		// add latency.
		batch, err := rd.Next(ctx, 1)
		for _, u := range batch {
			got = true
			queues[partition(u, len(queues))] <- u
		}
		if err != nil {
			if ctx.Err() != nil {
				return got, ctx.Err()
			}
			return got, fmt.Errorf("ingest: reading uploads: %w", err)
		}
	}
}

func (in *Ingester) health(err error) {
	if in.onHealth != nil {
		in.onHealth(err)
	}
}

// partition keeps every upload of one record on one worker: the record
// its address header names or, without one, the record part of the
// subject it was published on.
func partition(u *natsjs.Upload, n int) int {
	key := u.Address
	if key == "" {
		key = recordPart(u.Subject)
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// recordPart drops "fs.up.<device>." so two devices' writes to one record
// share a worker too.
func recordPart(subject string) string {
	dots := 0
	for i := 0; i < len(subject); i++ {
		if subject[i] == '.' {
			if dots++; dots == 3 {
				return subject[i+1:]
			}
		}
	}
	return subject
}

func (in *Ingester) handle(ctx context.Context, u *natsjs.Upload) {
	if ctx.Err() != nil {
		u.Nak(0) // stopping: hand it back now rather than after the ack wait
		return
	}
	res, err := in.decide(ctx, u)
	if err != nil {
		if ctx.Err() != nil {
			u.Nak(0)
			return
		}
		in.log.Warn("ingest: will retry upload", "subject", u.Subject, "seq", u.StreamSeq, "err", err)
		in.retryLater(u, err)
		return
	}
	if res != nil { // remembered and delivered in one publish
		if err := in.mlog.Put(ctx, res); err != nil {
			in.log.Warn("ingest: result not published, will retry", "mutation", res.MutationID, "err", err)
			in.retryLater(u, err)
			return
		}
		if in.onRes != nil {
			in.onRes(res)
		}
	}
	if err := u.Ack(); err != nil {
		in.log.Warn("ingest: ack", "seq", u.StreamSeq, "err", err)
	}
	if in.onHandled != nil {
		in.onHandled(u)
	}
}

// retryLater hands u, which failed with err, back for redelivery after a
// jittered wait that grows with its delivery count, so the uploads of an
// outage come back spread out rather than all together every second. An
// upload waiting for the mutation it builds on is not failing: it is
// retried after about the first wait each time (maxWaits bounds how often)
// and does not pay for the redeliveries a crash or an ack wait caused.
func (in *Ingester) retryLater(u *natsjs.Upload, err error) {
	n := u.Delivered
	if errors.Is(err, errWait) {
		n = 1
	}
	d := in.retry.Delay(n)
	if err := u.Nak(d); err != nil {
		in.log.Warn("ingest: nak", "seq", u.StreamSeq, "err", err)
	}
	if in.onRetry != nil {
		in.onRetry(u, d)
	}
}
