package natsjs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

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

// TestClient_PublishUploads: a page of uploads goes up in order and is
// acknowledged; when the broker goes away before acknowledging, the call
// returns ErrUploadNotAcked instead of waiting for ever.
func TestClient_PublishUploads(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := context.Background()
	opts := b.DeviceOptions(t, "tab1", "north")
	opts.RetryOnFailedConnect = true
	c, err := natsjs.Connect(b.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	page := func(from int) []*events.Envelope {
		var es []*events.Envelope
		for i := from; i < from+3; i++ {
			e := fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("r%d", i), map[string]any{"i": i})
			e.Origin = events.Origin{DeviceID: "tab1", MutationID: fmt.Sprintf("m%d", i)}
			es = append(es, e)
		}
		return es
	}
	if n, err := c.PublishUploads(ctx, page(0)); n != 3 || err != nil {
		t.Fatalf("PublishUploads = %d, %v; want 3 acknowledged", n, err)
	}
	st, err := b.Client.StreamState(ctx, events.UploadStream)
	if err != nil || st.Msgs != 3 {
		t.Fatalf("upload stream holds %d messages (%v), want 3", st.Msgs, err)
	}
	if err := b.Server.Close(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := c.PublishUploads(ctx, page(3))
	if n != 0 || err == nil {
		t.Fatalf("PublishUploads with the broker gone = %d, %v; want 0 and an error", n, err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("PublishUploads took %v with the broker gone, want about its 5 s ack wait at most", took)
	}
	t.Logf("broker gone: %v after %v", err, time.Since(start).Round(time.Millisecond))
}
