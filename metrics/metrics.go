// Package metrics owns fieldsync's Prometheus metrics: the broker's
// (published, ingested, conflicts, rejected, stream state) and the device
// agent's (sync durations, changes applied, bytes downloaded, outbox
// depth). It is the only package that imports the Prometheus client; the
// components report through small hook functions.
package metrics

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves reg in the Prometheus text format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// gaugeFunc is a collector whose samples are read at scrape time.
type gaugeFunc struct {
	desc *prometheus.Desc
	read func(ctx context.Context) map[string]float64 // label value -> sample
}

func (g *gaugeFunc) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *gaugeFunc) Collect(ch chan<- prometheus.Metric) {
	for label, v := range g.read(context.Background()) {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v, label)
	}
}
