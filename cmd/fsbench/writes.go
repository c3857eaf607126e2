package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
)

type writesOpts struct {
	devices  int
	rate     int
	duration time.Duration
	poll     time.Duration
	drain    time.Duration
	burst    int
}

func newWritesCmd() *cobra.Command {
	var o writesOpts
	cmd := &cobra.Command{
		Use:   "writes",
		Short: "POST /v1/records → accepted on the device's API, under load from running agents; and max ingest throughput",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runWrites(cmd.Context(), o) },
	}
	cmd.Flags().IntVar(&o.devices, "devices", 10, "device agents, each in its own process (an even number: shared records are per pair)")
	cmd.Flags().IntVar(&o.rate, "rate", 1000, "writes per second, all devices together, open loop")
	cmd.Flags().DurationVar(&o.duration, "duration", 30*time.Second, "how long to sustain the rate")
	cmd.Flags().DurationVar(&o.poll, "poll", 5*time.Millisecond, "how often the app side looks at undecided writes, only after /v1/stream reported writes-missed")
	cmd.Flags().DurationVar(&o.drain, "drain", 20*time.Second, "how long to wait after the load for the last outcomes")
	cmd.Flags().IntVar(&o.burst, "burst", 50000, "mutations queued for the throughput run")
	return cmd
}

func runWrites(ctx context.Context, o writesOpts) error {
	if o.devices < 2 || o.devices%2 != 0 || o.rate < o.devices {
		return fmt.Errorf("need an even --devices >= 2 and --rate >= --devices")
	}
	dir, err := os.MkdirTemp("", "fsbench-writes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Printf("write benchmark: %d device agents (own processes, local HTTP API), %d writes/s open loop for %s "+
		"(80%% new records, 10%% records the paired device writes at the same moment, 10%% chained edits); throughput run of %d mutations\n",
		o.devices, o.rate, o.duration, o.burst)
	res, err := userPath(ctx, filepath.Join(dir, "user"), o)
	if err != nil {
		return err
	}
	tp, err := measureThroughput(ctx, filepath.Join(dir, "throughput"), o.burst)
	if err != nil {
		return err
	}
	reportWrites(o, res, tp)
	return nil
}

// writesResult is what the user's-path run saw.
type writesResult struct {
	writes  []*benchWrite
	applied map[string]int // event id -> times in the org stream
	apiErrs int
	reads   int // API requests the app side made to follow the writes
	missed  int // writes-missed events (the app side then polled)
	span    time.Duration
}

// userPath runs the server side (broker with ingest) and o.devices agents,
// sends the writes through each agent's API and follows them there; then
// reads the org stream to check every write landed once.
func userPath(ctx context.Context, dir string, o writesOpts) (writesResult, error) {
	var res writesResult
	cfg := broker.Config{DataDir: filepath.Join(dir, "broker"), HTTPAddr: "127.0.0.1:0", OrgUnits: []string{benchUnit}}
	cfg.NATS.Port = -1
	b, err := broker.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return res, err
	}
	defer b.Close(context.Background())
	procs, err := startAgents(ctx, b, dir, o.devices)
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	if err != nil {
		return res, err
	}
	octx, stop := context.WithCancel(ctx)
	defer stop()
	obs := make([]*observer, len(procs))
	var owg sync.WaitGroup
	for i, p := range procs {
		obs[i] = newObserver(p, o.poll)
		owg.Add(2)
		go func() { defer owg.Done(); obs[i].run(octx) }()
		go func() { defer owg.Done(); obs[i].watchStream(octx) }()
	}
	for _, ob := range obs { // outcomes are announced to open streams only
		select {
		case <-ob.ready:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	period := time.Duration(o.devices) * time.Second / time.Duration(o.rate)
	start := time.Now().Add(200 * time.Millisecond)
	end := start.Add(o.duration)
	perDev := make([][]*benchWrite, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			phase := time.Duration(i) * period / time.Duration(len(procs))
			perDev[i] = runDevice(ctx, p, i, start.Add(phase), end, period, obs[i])
		}()
	}
	wg.Wait()
	res.span = time.Since(start)
	drainUntil := time.Now().Add(o.drain)
	for time.Now().Before(drainUntil) && ctx.Err() == nil && undecided(obs) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	owg.Wait()
	for i := range procs {
		if err := obs[i].sweep(ctx, ownPrefix(procs[i].device), sharedPrefix(i)); err != nil {
			return res, err
		}
		res.writes = append(res.writes, perDev[i]...)
		res.apiErrs += obs[i].errs
		res.reads += obs[i].reads
		res.missed += obs[i].missed
	}
	res.applied, err = streamEventCounts(ctx, b.Client().Conn())
	return res, err
}

func undecided(obs []*observer) int {
	n := 0
	for _, o := range obs {
		n += o.undecided()
	}
	return n
}

// startAgents issues n devices their credentials, as `broker-embed device
// add` does, starts an agent process for each and waits for their initial
// sync.
func startAgents(ctx context.Context, b *broker.Broker, dir string, n int) ([]*agentProc, error) {
	procs := make([]*agentProc, n)
	creds := make([]string, n)
	for i := range procs {
		c, _, err := b.Authority().AddDevice(fmt.Sprintf("dev%02d", i), []string{benchUnit})
		if err != nil {
			return nil, err
		}
		creds[i] = filepath.Join(dir, fmt.Sprintf("dev%02d.creds", i))
		if err := natsauth.WriteCreds(creds[i], c); err != nil {
			return nil, err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := range procs {
		g.Go(func() error {
			p, err := startAgentProc(gctx, b.ClientURL(), creds[i], dir, fmt.Sprintf("dev%02d", i))
			if err != nil {
				return err
			}
			procs[i] = p
			return p.waitSynced(gctx)
		})
	}
	err := g.Wait()
	var started []*agentProc
	for _, p := range procs {
		if p != nil {
			started = append(started, p)
		}
	}
	return started, err
}

// streamEventCounts reads the org unit stream from the start over the
// broker's own connection (the server's view) and counts each event id.
func streamEventCounts(ctx context.Context, nc *nats.Conn) (map[string]int, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	name, _ := events.OrgStream(benchUnit)
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	last := stream.CachedInfo().State.LastSeq
	counts := map[string]int{}
	if last == 0 {
		return counts, nil
	}
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			return nil, err
		}
		e, err := events.Decode(m.Data())
		if err != nil {
			return nil, fmt.Errorf("org stream: %w", err)
		}
		counts[e.EventID]++
		md, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		if md.Sequence.Stream >= last {
			return counts, nil
		}
	}
}

var errNoAnswer = errors.New("no answer")

// writeTally sorts the writes by what became of them.
type writeTally struct {
	sent, answered, refused           int
	outcomes                          map[string]int
	accepted, conflicted, answerTimes []time.Duration
	byKind                            map[writeKind][]time.Duration // accepted, by kind
	lost, doubled, wrong, unconfirmed int
	pending                           int // still pending on the device after the drain, not on the server
	firstRefusal                      error
}

func tally(res writesResult) writeTally {
	t := writeTally{sent: len(res.writes), outcomes: map[string]int{}, byKind: map[writeKind][]time.Duration{}}
	for _, w := range res.writes {
		if w.err != nil || w.answered.IsZero() {
			t.refused++
			if t.firstRefusal == nil {
				t.firstRefusal = cmp.Or(w.err, errNoAnswer)
			}
			continue
		}
		t.answered++
		t.answerTimes = append(t.answerTimes, w.answered.Sub(w.sched))
		t.outcomes[w.outcome]++
		n := res.applied[w.eventID()]
		switch {
		case n > 1:
			t.doubled++
		case w.outcome == outcomeAccepted && n == 0:
			t.lost++
		case w.outcome == outcomePending && n == 0:
			t.pending++ // unconfirmed, still queued on the device
		case w.outcome == "" && n == 0:
			t.lost++ // answered 202, gone from the device, not on the server
		case w.outcome == "" || w.outcome == outcomePending:
			t.unconfirmed++ // on the server, never shown decided on the device
		case w.outcome != outcomeAccepted && n > 0:
			t.wrong++ // on the server, reported as a conflict or rejection
		}
		switch w.outcome {
		case outcomeAccepted:
			d := w.seen.Sub(w.sched)
			t.accepted = append(t.accepted, d)
			t.byKind[w.kind] = append(t.byKind[w.kind], d)
		case outcomeConflict, outcomeRejected:
			t.conflicted = append(t.conflicted, w.seen.Sub(w.sched))
		}
	}
	return t
}

func reportWrites(o writesOpts, res writesResult, tp throughput) {
	t := tally(res)
	fmt.Println()
	fmt.Printf("writes scheduled %d, answered 202 %d, refused or failed %d", t.sent, t.answered, t.refused)
	if t.firstRefusal != nil {
		fmt.Printf(" (first: %v)", t.firstRefusal)
	}
	fmt.Printf("; outcomes seen on the devices: %d accepted, %d conflict, %d rejected; %d still pending and %d gone undecided %s after the load\n",
		t.outcomes[outcomeAccepted], t.outcomes[outcomeConflict], t.outcomes[outcomeRejected], t.outcomes[outcomePending], t.outcomes[""], o.drain)
	fmt.Printf("POST /v1/records answered (from its scheduled time):      p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n",
		ms(percentile(t.answerTimes, 50)), ms(percentile(t.answerTimes, 99)), ms(percentile(t.answerTimes, 100)))
	p99 := percentile(t.accepted, 99)
	fmt.Printf("write -> shown accepted (not pending) on the device's API: p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms   target p99 <= 50 ms %s\n",
		ms(percentile(t.accepted, 50)), ms(p99), ms(percentile(t.accepted, 100)), verdict(len(t.accepted) > 0 && p99 <= 50*time.Millisecond))
	for _, k := range []writeKind{writeNew, writeChain, writeShared} {
		d := t.byKind[k]
		fmt.Printf("    %-14s %6d accepted: p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n", k, len(d), ms(percentile(d, 50)), ms(percentile(d, 99)), ms(percentile(d, 100)))
	}
	fmt.Printf("write -> conflict shown (expected: concurrent edits of shared records): %d, p50 %.2f ms  p99 %.2f ms\n",
		len(t.conflicted), ms(percentile(t.conflicted, 50)), ms(percentile(t.conflicted, 99)))
	fmt.Printf("    (the app side learns outcomes from the \"write\" events of /v1/stream; it made %.1f requests/s per device to undo conflicts%s; %d failed)\n",
		float64(res.reads)/res.span.Seconds()/float64(o.devices), fallbackNote(res.missed, o.poll), res.apiErrs)
	fmt.Printf("server check (org stream read back): lost %d  target 0 %s   doubled %d  target 0 %s   applied but shown as conflict %d   applied but never shown decided %d   still queued on the devices %d\n",
		t.lost, verdict(t.lost == 0), t.doubled, verdict(t.doubled == 0), t.wrong, t.unconfirmed, t.pending)
	fmt.Printf("reference: raw JetStream publish->ack round trip over TCP: p50 %.2f ms  p99 %.2f ms\n", ms(tp.rawP50), ms(tp.rawP99))
	fmt.Printf("max ingest throughput: %.0f mutations/s                              target >= 10000/s  %s\n", tp.rate, verdict(tp.rate >= 10000))
}

// fallbackNote says whether the app side had to poll.
func fallbackNote(missed int, poll time.Duration) string {
	if missed == 0 {
		return ", no polling"
	}
	return fmt.Sprintf(" and polled every %s after %d writes-missed events", poll, missed)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile of d (p = 100: the maximum).
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}
