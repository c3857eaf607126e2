package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// TestBroker_Quota_StreamLimits: FS_UPLOADS is a work queue stored per
// device with the per-device quota and byte cap refusing new uploads,
// FS_DEADLETTER drops its oldest; both carry the configured bounds, and
// by default the documented ones.
func TestBroker_Quota_StreamLimits(t *testing.T) {
	uploads := func(t *testing.T, js jetstream.JetStream, maxBytes, perDevice int64) {
		t.Helper()
		s, err := js.Stream(ctxT(t), events.UploadStream)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		src, dest := events.UploadSubjectTransform()
		if c.Retention != jetstream.WorkQueuePolicy || c.MaxBytes != maxBytes || c.MaxMsgsPerSubject != perDevice ||
			c.Discard != jetstream.DiscardNew || !c.DiscardNewPerSubject || c.MaxAge != 0 ||
			c.SubjectTransform == nil || c.SubjectTransform.Source != src || c.SubjectTransform.Destination != dest {
			t.Errorf("FS_UPLOADS config %+v; want work queue, max_bytes %d, %d per device, discard new (per subject), no max age, transform %s -> %s",
				c, maxBytes, perDevice, src, dest)
		}
	}
	deadLetters := func(t *testing.T, js jetstream.JetStream, maxBytes int64, age time.Duration) {
		t.Helper()
		s, err := js.Stream(ctxT(t), natsjs.DeadLetterStream)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if c.MaxBytes != maxBytes || c.MaxAge != age || c.Discard != jetstream.DiscardOld {
			t.Errorf("FS_DEADLETTER: max_bytes %d, max_age %v, discard %v; want %d, %v, old", c.MaxBytes, c.MaxAge, c.Discard, maxBytes, age)
		}
	}
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	js, _ := jetstream.New(b.Client().Conn())
	uploads(t, js, natsjs.DefaultUploadMaxBytes, natsjs.DefaultDevicePendingUploads)
	deadLetters(t, js, natsjs.DefaultDeadLetterMaxBytes, 14*24*time.Hour)

	cfg := testConfig(t.TempDir(), "north")
	cfg.Ingest = natsjs.IngestPolicy{UploadMaxBytes: 3 << 20, DevicePendingUploads: 7, DeadLetterMaxBytes: 1 << 20, DeadLetterRetention: 24 * time.Hour}
	b = openBroker(t, cfg)
	js, _ = jetstream.New(b.Client().Conn())
	uploads(t, js, 3<<20, 7)
	deadLetters(t, js, 1<<20, 24*time.Hour)
}

// pauseIngest stops ingest from receiving uploads (JetStream consumer
// pause) until the returned resume is called, so uploads wait in
// FS_UPLOADS as they do while ingest is down or behind.
func pauseIngest(t *testing.T, b *broker.Broker) (resume func()) {
	t.Helper()
	js, _ := jetstream.New(b.Client().Conn())
	if _, err := js.PauseConsumer(ctxT(t), events.UploadStream, natsjs.IngestDurable, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Resuming moves the pause deadline close: the server's unpause timer
	// wakes the waiting pulls, an explicit resume leaves them until the
	// client's next pull (nats-server 2.15).
	return func() {
		if _, err := js.PauseConsumer(ctxT(t), events.UploadStream, natsjs.IngestDurable, time.Now().Add(50*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
}

func upload(t *testing.T, c *natsjs.Client, device, id, pad string) (string, error) {
	t.Helper()
	e := fstest.Change(t, "north", events.ChannelEvents, "event", id, map[string]any{"pad": pad})
	e.Origin = events.Origin{DeviceID: device, MutationID: "m" + id}
	_, err := c.PublishUpload(ctxT(t), e)
	return e.Origin.MutationID, err
}

func waitAccepted(t *testing.T, b *broker.Broker, device string, muts ...string) {
	t.Helper()
	log, err := b.Client().MutationLog(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range muts {
		var res *events.Result
		fstest.Eventually(t, 20*time.Second, func() bool {
			res, _ = log.Get(ctxT(t), device, m)
			return res != nil
		}, "ingest result of %s's %s", device, m)
		if res.Status != events.Accepted {
			t.Fatalf("%s's %s: %+v, want accepted", device, m, res)
		}
	}
}

// TestBroker_Quota_PerDevice: while ingest is behind, a device with as
// many uploads waiting as its quota is refused by the broker
// (ErrUploadQuota) and no one else is; a full FS_UPLOADS refuses new
// uploads and drops none it holds; once ingest catches up every stored
// upload is accepted and the refused ones go up again.
func TestBroker_Quota_PerDevice(t *testing.T) {
	cfg := testConfig(t.TempDir(), "north")
	cfg.Ingest.DevicePendingUploads, cfg.Ingest.UploadMaxBytes = 5, 1<<20
	b := openBroker(t, cfg)
	a := fstest.MustConnectDevice(t, b.ClientURL(), b.Authority(), "A", "north")
	c := fstest.MustConnectDevice(t, b.ClientURL(), b.Authority(), "C", "north")
	resume := pauseIngest(t, b)

	var stored []string
	for i := range 5 {
		m, err := upload(t, a, "A", fmt.Sprintf("a%d", i), "x")
		if err != nil {
			t.Fatalf("A's upload %d within its quota: %v", i, err)
		}
		stored = append(stored, m)
	}
	if _, err := upload(t, a, "A", "a5", "x"); !errors.Is(err, natsjs.ErrUploadQuota) {
		t.Fatalf("A's 6th waiting upload: %v, want ErrUploadQuota", err)
	}
	// C still uploads; with 250 KiB bodies it fills the 1 MiB stream: the
	// broker refuses the upload that does not fit and keeps all it holds.
	pad := strings.Repeat("y", 250<<10)
	var cStored []string
	var full error
	for i := 0; i < 5 && full == nil; i++ {
		m, err := upload(t, c, "C", fmt.Sprintf("c%d", i), pad)
		if err == nil {
			cStored = append(cStored, m)
		}
		full = err
	}
	if len(cStored) == 0 || !errors.Is(full, natsjs.ErrUploadQuota) {
		t.Fatalf("C stored %d uploads, then %v; want some stored, then ErrUploadQuota (stream full)", len(cStored), full)
	}
	st, err := b.Client().StreamState(ctxT(t), events.UploadStream)
	if err != nil || st.Msgs != uint64(len(stored)+len(cStored)) {
		t.Fatalf("FS_UPLOADS holds %d uploads (%v), want the %d stored: a full stream drops none", st.Msgs, err, len(stored)+len(cStored))
	}

	t0 := time.Now()
	resume()
	waitAccepted(t, b, "A", stored...)
	t.Logf("resume to accepted: %v", time.Since(t0))
	waitAccepted(t, b, "C", cStored...)
	fstest.Eventually(t, 10*time.Second, func() bool {
		st, err := b.Client().StreamState(ctxT(t), events.UploadStream)
		return err == nil && st.Msgs == 0
	}, "FS_UPLOADS empties once ingest has decided every upload")
	m, err := upload(t, a, "A", "a5", "x")
	if err != nil {
		t.Fatalf("A's refused upload again after ingest caught up: %v", err)
	}
	waitAccepted(t, b, "A", m)
}

// TestBroker_Quota_AgentLosesNothing: a real agent with 12 writes queued
// against a quota of 3 while ingest is stopped has 3 stored and the rest
// kept queued (its status says why); after ingest resumes every write is
// accepted and the outbox empties.
func TestBroker_Quota_AgentLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(t.TempDir(), "north")
	cfg.Ingest.DevicePendingUploads = 3
	b := openBroker(t, cfg)
	resume := pauseIngest(t, b)
	a := runAgent(t, b, "A", fstest.MustDeviceCreds(t, b.Authority(), "A", "north"), "north")
	var muts []string
	for i := range 12 {
		m, err := a.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: fmt.Sprintf("q%d", i), Body: map[string]any{"i": i}})
		if err != nil {
			t.Fatal(err)
		}
		muts = append(muts, m.MutationID)
	}
	counts := func() map[string]int {
		n, err := a.DB().OutboxCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	fstest.Eventually(t, 15*time.Second, func() bool {
		st, err := a.Status(context.Background())
		return err == nil && strings.Contains(st.LastError, "quota")
	}, "A's status names the refused upload")
	if n := counts(); n[store.StateSent] != 3 || n[store.StateQueued] != 9 {
		t.Fatalf("outbox %v with ingest stopped, want 3 sent and 9 queued", n)
	}
	resume()
	waitAccepted(t, b, "A", muts...)
	fstest.Eventually(t, 30*time.Second, func() bool {
		n := counts()
		return n[store.StateQueued]+n[store.StateSent]+n[store.StateConflict]+n[store.StateRejected] == 0
	}, "A's outbox empty once every write is accepted")
}
