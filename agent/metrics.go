package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/fieldsync/fieldsync/metrics"
)

// metricsReadTimeout bounds the store reads of one scrape.
const metricsReadTimeout = 2 * time.Second

// newMetrics returns the agent's metrics, reading the outbox and the
// staged download from the store at each scrape.
func (a *Agent) newMetrics() *metrics.Agent {
	outbox := func(ctx context.Context) map[string]float64 {
		ctx, cancel := context.WithTimeout(ctx, metricsReadTimeout)
		defer cancel()
		counts, err := a.db.OutboxCounts(ctx)
		if err != nil {
			return nil
		}
		out := make(map[string]float64, len(counts))
		for state, n := range counts {
			out[state] = float64(n)
		}
		return out
	}
	staged := func(ctx context.Context) float64 {
		ctx, cancel := context.WithTimeout(ctx, metricsReadTimeout)
		defer cancel()
		sg, err := a.db.StagingState(ctx)
		if err != nil || sg.Ready == nil { // as Status.StagedChanges: only a completed download waits for Apply
			return 0
		}
		return float64(sg.Changes)
	}
	return metrics.NewAgent(outbox, staged)
}

// Metrics serves the agent's Prometheus metrics (sync durations, changes
// applied, bytes downloaded, outbox depth, staged changes).
func (a *Agent) Metrics() http.Handler { return a.metrics.Handler() }

// syncFinished observes a sync of scope started at start. A sync cut short
// because ctx ended (the agent stopping, the caller leaving) is not
// counted: it neither completed nor failed.
func (a *Agent) syncFinished(ctx context.Context, scope Scope, start time.Time, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	a.metrics.SyncFinished(string(scope), time.Since(start), err)
}
