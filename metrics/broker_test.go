package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestBroker_IngestUp(t *testing.T) {
	none := func(context.Context) map[string]float64 { return nil }
	pendingErr := errors.New("durable gone")
	var pending error
	b := NewBroker(none, none, none, func(context.Context) (float64, error) { return 3, pending })

	requireLines(t, scrape(t, b.Handler()), "fieldsync_ingest_up 0", "fieldsync_ingest_pending 3")
	b.IngestUp(true)
	requireLines(t, scrape(t, b.Handler()), "fieldsync_ingest_up 1")

	b.IngestUp(false)
	pending = pendingErr
	text := scrape(t, b.Handler())
	requireLines(t, text, "fieldsync_ingest_up 0")
	if strings.Contains(text, "fieldsync_ingest_pending ") {
		t.Fatalf("ingest_pending sampled while it cannot be read:\n%s", text)
	}
}
