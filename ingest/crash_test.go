package ingest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// expireIngestAcks lets uploads a stopped ingester held unacknowledged be
// redelivered now instead of after the durable's ack wait (10–30 s): it
// shortens the ack wait, takes each held upload back from the broker once
// it has expired (its redelivery) and hands it back with a Nak, which the
// broker redelivers at once to the next ingester.
func (h *harness) expireIngestAcks() {
	h.t.Helper()
	ctx := testCtx(h.t)
	cons, err := h.js.Consumer(ctx, events.UploadStream, natsjs.IngestDurable)
	if err != nil {
		h.t.Fatal(err)
	}
	held := cons.CachedInfo().NumAckPending
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 100 * time.Millisecond
	if _, err := h.js.UpdateConsumer(ctx, events.UploadStream, cfg); err != nil {
		h.t.Fatal(err)
	}
	expired := map[uint64]bool{}
	eventually(h.t, fmt.Sprintf("the %d held uploads to expire", held), func() bool {
		batch, err := cons.FetchNoWait(max(held, 1))
		if err != nil {
			h.t.Fatal(err)
		}
		for m := range batch.Messages() {
			if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
				expired[md.Sequence.Stream] = true
			}
			if err := m.Nak(); err != nil {
				h.t.Fatal(err)
			}
		}
		return len(expired) >= held
	})
}

func TestIngester_Run_CrashMidBatchAppliesEachMutationOnce(t *testing.T) {
	t.Parallel()
	const records, perRecord, crashAt = 30, 10, 100
	h := newHarness(t, "north")
	results := h.watchResults("tab1")

	mutID := func(r, k int) string { return fmt.Sprintf("r%02d-m%d", r, k) }
	var all []string
	for k := 0; k < perRecord; k++ {
		for r := 0; r < records; r++ {
			after := ""
			if k > 0 {
				after = mutID(r, k-1)
			}
			h.upload(mutation(t, "tab1", mutID(r, k), "north", fmt.Sprintf("rec%02d", r), 0, after, map[string]any{"k": k}))
			all = append(all, mutID(r, k))
		}
	}

	// The first ingester dies after ~100 uploads, mid-batch.
	ctx, crash := context.WithCancel(context.Background())
	defer crash()
	var handled atomic.Int64
	first := h.run(ctx, Options{}, func(*natsjs.Upload) {
		if handled.Add(1) == crashAt {
			crash()
		}
	})
	if err := first.wait(t); err != nil {
		t.Fatalf("first ingester: %v", err)
	}
	n1 := handled.Load()
	t.Logf("first ingester handled %d of %d uploads", n1, len(all))
	if n1 < crashAt || n1 >= int64(len(all)) {
		t.Fatalf("first ingester handled %d uploads: the crash did not happen mid-batch", n1)
	}

	h.expireIngestAcks()
	h.start(Options{})
	rs := results.wait(t, all...)
	for _, m := range all {
		wantResult(t, rs[m], "tab1", m, events.Accepted, "")
	}

	chs := fromDevices(h.orgChanges("north"))
	if len(chs) != len(all) {
		t.Errorf("org stream holds %d device changes for %d mutations", len(chs), len(all))
	}
	for _, m := range all {
		got := ofMutation(chs, "tab1", m)
		if len(got) != 1 {
			t.Errorf("mutation %s is in the org stream %d times", m, len(got))
			continue
		}
		if got[0].Seq != rs[m].Version {
			t.Errorf("mutation %s accepted at %d but applied at %d", m, rs[m].Version, got[0].Seq)
		}
	}
	for r := 0; r < records; r++ {
		hist := ofRecord(chs, fmt.Sprintf("rec%02d", r))
		if len(hist) != perRecord {
			t.Errorf("rec%02d has %d device changes, want %d", r, len(hist), perRecord)
		}
		for k, c := range hist {
			if k >= perRecord || c.Env.Origin.MutationID != mutID(r, k) {
				t.Errorf("rec%02d change %d is %s, want %s (upload order)", r, k, c.Env.Origin.MutationID, mutID(r, k))
				break
			}
		}
	}
}

// The worst window: ingest applied a mutation and died before remembering
// its result, and the org stream's duplicate window has passed since. The
// redelivered mutation — now with a stale base — must be recognised in the
// record's history, answered Accepted with that version and not applied again.
func TestIngester_Run_AppliedButNotRememberedIsFoundInHistory(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	h.setOrgDuplicates(time.Second, "north")
	results := h.watchResults("tab1")
	ctx := testCtx(t)

	v1 := h.b.MustPublish(t, serverChange(t, "north", "r1", map[string]any{"rev": 1}))
	m1 := mutation(t, "tab1", "m1", "north", "r1", v1, "", map[string]any{"rev": "tab1"})
	applied := *m1
	applied.EventID = "mut-tab1-m1"
	ack, err := h.b.Client.Publisher().Publish(ctx, &applied, natsjs.PublishOptions{ExpectedVersion: &v1})
	if err != nil {
		t.Fatal(err)
	}
	v3 := h.b.MustPublish(t, serverChange(t, "north", "r1", map[string]any{"rev": 3}))
	h.waitOrgDedupeExpired("north")
	if h.remembered("tab1", "m1") != nil {
		t.Fatal("mutation log already knows m1")
	}

	h.start(Options{})
	h.upload(m1)
	r := results.wait(t, "m1")["m1"]
	wantResult(t, r, "tab1", "m1", events.Accepted, "")
	if r.Version != ack.Version {
		t.Errorf("accepted at version %d, want %d where it was applied (record is at %d)", r.Version, ack.Version, v3)
	}
	if n := len(ofMutation(h.orgChanges("north"), "tab1", "m1")); n != 1 {
		t.Errorf("m1 is in the org stream %d times, want 1", n)
	}
	if rem := h.remembered("tab1", "m1"); rem == nil || rem.Status != events.Accepted || rem.Version != ack.Version {
		t.Errorf("mutation log holds %+v, want accepted at %d", rem, ack.Version)
	}
}
