package natsjs_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

// TestIngestReader_Next_BoundedByBytes: a batch of large uploads holds
// about 4 MiB, however many uploads the caller asks for.
func TestIngestReader_Next_BoundedByBytes(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := context.Background()
	const uploads, bodySize = 40, 200 << 10
	for i := 0; i < uploads; i++ {
		e := fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("r%d", i), map[string]any{"blob": make([]byte, bodySize)})
		e.Origin = events.Origin{DeviceID: "tab1", MutationID: fmt.Sprintf("m%d", i)}
		if _, err := b.Client.PublishUpload(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	r, err := b.Client.OpenIngest(ctx, natsjs.IngestPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := 0
	for got < uploads {
		batch, err := r.Next(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, u := range batch {
			size += len(u.Data)
			if err := u.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		if limit := 4<<20 + bodySize + 1<<10; size > limit {
			t.Fatalf("a batch of %d uploads holds %d bytes, limit %d", len(batch), size, limit)
		}
		got += len(batch)
	}
	t.Logf("%d uploads of %d KiB read in batches of at most ~4 MiB", got, bodySize>>10)
}
