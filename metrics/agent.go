package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Agent holds the device agent's metrics.
type Agent struct {
	reg        *prometheus.Registry
	syncs      *prometheus.HistogramVec
	applied    *prometheus.CounterVec
	downloaded prometheus.Counter
}

// Sync outcomes, the values of the outcome label.
const (
	OutcomeOK     = "ok"
	OutcomeFailed = "failed"
)

// syncBuckets span a delta sync of a few changes (well under a second) to
// an initial load of a large unit (many minutes).
var syncBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

// NewAgent registers the device agent's metrics; the functions are read
// at every scrape: local writes in the outbox per state (queued, sent,
// conflict, rejected), and the changes of a completed staged download not
// yet made live by Apply. A function that cannot read returns a nil map
// (no samples) or 0.
func NewAgent(outbox func(ctx context.Context) map[string]float64, staged func(ctx context.Context) float64) *Agent {
	a := &Agent{reg: prometheus.NewRegistry(),
		syncs: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fieldsync_agent_sync_duration_seconds",
			Help: "Duration of finished syncs, by scope (full, events, admin, documents) and outcome (ok, failed).", Buckets: syncBuckets},
			[]string{"scope", "outcome"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fieldsync_agent_records_applied_total",
			Help: "Downloaded changes written to the live store or staged for Apply, by channel."}, []string{"channel"}),
		downloaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "fieldsync_agent_downloaded_bytes_total",
			Help: "Message payload bytes received from JetStream (changes and write results)."}),
	}
	a.reg.MustRegister(a.syncs, a.applied, a.downloaded,
		&gaugeFunc{desc: prometheus.NewDesc("fieldsync_agent_outbox_depth", "Local writes in the outbox, by state (queued, sent, conflict, rejected).", []string{"state"}, nil), read: outbox},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fieldsync_agent_staged_changes", Help: "Changes of a completed staged download waiting for Apply."},
			func() float64 { return staged(context.Background()) }))
	return a
}

// SyncFinished observes one finished sync of scope that took d; a non-nil
// err counts it as failed.
func (a *Agent) SyncFinished(scope string, d time.Duration, err error) {
	outcome := OutcomeOK
	if err != nil {
		outcome = OutcomeFailed
	}
	a.syncs.WithLabelValues(scope, outcome).Observe(d.Seconds())
}

// Applied counts n downloaded changes of channel written to the store
// (live or staged); a negative n is ignored.
func (a *Agent) Applied(channel string, n int) {
	if n >= 0 {
		a.applied.WithLabelValues(channel).Add(float64(n))
	}
}

// Downloaded counts n payload bytes received from the broker; a negative
// n is ignored.
func (a *Agent) Downloaded(n int) {
	if n >= 0 {
		a.downloaded.Add(float64(n))
	}
}

// Handler serves /metrics.
func (a *Agent) Handler() http.Handler { return Handler(a.reg) }
