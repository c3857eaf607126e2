package broker

import (
	"context"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/metrics"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/publish"
)

// newMetrics returns the broker's metrics, reading stream state from the
// broker's own connection at each scrape.
func (b *Broker) newMetrics() *metrics.Broker {
	perStream := func(pick func(natsjs.StreamState) uint64) metrics.StreamStats {
		return func(ctx context.Context) map[string]float64 {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			out := map[string]float64{}
			for _, unit := range append([]string{""}, b.cfg.OrgUnits...) {
				if st, err := b.client.UnitState(ctx, unit); err == nil {
					out[st.Name] = float64(pick(st))
				}
			}
			for _, name := range []string{events.UploadStream, events.ResultStream} {
				if st, err := b.client.StreamState(ctx, name); err == nil {
					out[name] = float64(pick(st))
				}
			}
			return out
		}
	}
	pending := func(ctx context.Context) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		n, err := b.client.IngestPending(ctx)
		return float64(n), err
	}
	return metrics.NewBroker(perStream(func(s natsjs.StreamState) uint64 { return s.Msgs }),
		perStream(func(s natsjs.StreamState) uint64 { return uint64(s.Consumer) }), b.consumerLag, pending)
}

// consumerLag reads, per org unit stream (and the tenant stream), how far
// its furthest-behind consumer lags.
func (b *Broker) consumerLag(ctx context.Context) map[string]float64 {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := map[string]float64{}
	for _, unit := range append([]string{""}, b.cfg.OrgUnits...) {
		name, err := events.OrgStream(unit)
		if err != nil {
			continue
		}
		if n, err := b.client.ConsumerLag(ctx, name); err == nil {
			out[name] = float64(n)
		}
	}
	return out
}

func publishOutcome(r publish.Response) string {
	if r.Error != nil {
		return r.Error.Code
	}
	if r.Duplicate {
		return "duplicate"
	}
	return "ok"
}
