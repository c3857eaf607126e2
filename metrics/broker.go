package metrics

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// Broker holds the server side's metrics.
type Broker struct {
	reg       *prometheus.Registry
	published *prometheus.CounterVec
	ingested  *prometheus.CounterVec
	ingestUp  prometheus.Gauge
}

// StreamStats reads one number per stream at scrape time.
type StreamStats func(ctx context.Context) map[string]float64

// NewBroker registers the broker's metrics; the functions are read at
// every scrape: messages and consumers per stream, the lag of the
// furthest-behind consumer per org unit stream, and uploads waiting for
// ingest (no sample while that cannot be read, e.g. ingest's durable is
// gone: the absence, with fieldsync_ingest_up 0, says more than a 0).
func NewBroker(messages, consumers, lag StreamStats, ingestPending func(ctx context.Context) (float64, error)) *Broker {
	b := &Broker{reg: prometheus.NewRegistry(),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fieldsync_published_total",
			Help: "Server-side changes through the publish API, by outcome."}, []string{"outcome"}),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fieldsync_ingested_total",
			Help: "Device mutations decided by ingest, by status (accepted, conflict, rejected)."}, []string{"status"}),
		ingestUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fieldsync_ingest_up",
			Help: "1 while ingest reads device uploads, 0 while it is down (its consumer failed and is being re-created)."}),
	}
	b.reg.MustRegister(b.published, b.ingested, b.ingestUp,
		&gaugeFunc{desc: prometheus.NewDesc("fieldsync_stream_messages", "Messages held per stream.", []string{"stream"}, nil), read: messages},
		&gaugeFunc{desc: prometheus.NewDesc("fieldsync_stream_consumers", "Consumers (device durables and others) per stream.", []string{"stream"}, nil), read: consumers},
		&gaugeFunc{desc: prometheus.NewDesc("fieldsync_stream_consumer_lag", "Messages the furthest-behind consumer of an org unit stream has still to receive.", []string{"stream"}, nil), read: lag},
		&optionalGauge{desc: prometheus.NewDesc("fieldsync_ingest_pending", "Uploads not yet handled by ingest (ingest lag).", nil, nil),
			read: ingestPending})
	return b
}

// optionalGauge is a gauge read at scrape time that has no sample while
// it cannot be read.
type optionalGauge struct {
	desc *prometheus.Desc
	read func(ctx context.Context) (float64, error)
}

func (g *optionalGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *optionalGauge) Collect(ch chan<- prometheus.Metric) {
	if v, err := g.read(context.Background()); err == nil {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
	}
}

// IngestUp says whether ingest is reading uploads.
func (b *Broker) IngestUp(up bool) {
	if up {
		b.ingestUp.Set(1)
	} else {
		b.ingestUp.Set(0)
	}
}

// Published counts one publish API answer ("ok" or an error code).
func (b *Broker) Published(outcome string) { b.published.WithLabelValues(outcome).Inc() }

// Ingested counts one ingest result by status.
func (b *Broker) Ingested(status string) { b.ingested.WithLabelValues(status).Inc() }

// Handler serves /metrics.
func (b *Broker) Handler() http.Handler { return Handler(b.reg) }
