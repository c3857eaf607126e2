package ingest

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// Ingester applies device uploads. Several may run against one broker (one
// per node): they share the durable and each upload goes to one of them.
type Ingester struct {
	client  *natsjs.Client
	pub     *natsjs.Publisher
	rights  Rights
	policy  natsjs.IngestPolicy
	onRes   func(*events.Result)
	log     *slog.Logger
	workers int
	now     func() time.Time
	mlog    *natsjs.MutationLog
	// onHandled, if set, runs after each upload is acknowledged (tests).
	onHandled func(u *natsjs.Upload)
}

// Options tune an [Ingester].
type Options struct {
	Rights Rights
	// Policy is the upload side's policy (its AckWait is used).
	Policy natsjs.IngestPolicy
	// OnResult, if set, is told of every result published (metrics).
	OnResult func(*events.Result)
	// Workers process uploads in parallel; uploads of one record always go
	// to the same worker, in order (default 8).
	Workers int
	Log     *slog.Logger
}

// New returns an ingester on client.
func New(client *natsjs.Client, o Options) *Ingester {
	if o.Workers <= 0 {
		o.Workers = 32
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Ingester{client: client, pub: client.Publisher(), rights: o.Rights.withDefaults(), policy: o.Policy, onRes: o.OnResult, log: o.Log,
		workers: o.Workers, now: time.Now}
}

// Run ingests until ctx is cancelled; uploads in flight when it stops are
// redelivered to the next run (or another node).
func (in *Ingester) Run(ctx context.Context) error {
	var err error
	if in.mlog, err = in.client.MutationLog(ctx); err != nil {
		return stopped(ctx, err)
	}
	rd, err := in.client.OpenIngest(ctx, in.policy)
	if err != nil {
		return stopped(ctx, err)
	}
	defer rd.Close()
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
	for {
		// One at a time: the workers queue, so batching here would only
		// add latency.
		batch, err := rd.Next(ctx, 1)
		for _, u := range batch {
			queues[partition(u.Subject, len(queues))] <- u
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return err
		}
	}
}

// stopped returns nil when err only says ctx ended.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// partition keeps every upload of one record on one worker (the subject
// names device and record; the record part decides).
func partition(subject string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(recordPart(subject)))
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
		u.Nak(time.Second)
		return
	}
	if res != nil { // remembered and delivered in one publish
		if err := in.mlog.Put(ctx, res); err != nil {
			in.log.Warn("ingest: result not published, will retry", "mutation", res.MutationID, "err", err)
			u.Nak(time.Second)
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
