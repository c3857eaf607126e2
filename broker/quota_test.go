package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

// TestBroker_Quota_StreamLimits: FS_UPLOADS and FS_DEADLETTER carry the
// configured bounds, and by default the documented ones.
func TestBroker_Quota_StreamLimits(t *testing.T) {
	check := func(t *testing.T, js jetstream.JetStream, name string, maxBytes int64, age time.Duration) {
		t.Helper()
		s, err := js.Stream(ctxT(t), name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if c.MaxBytes != maxBytes || c.MaxAge != age || c.Discard != jetstream.DiscardOld {
			t.Errorf("%s: max_bytes %d, max_age %v, discard %v; want %d, %v, old", name, c.MaxBytes, c.MaxAge, c.Discard, maxBytes, age)
		}
	}
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	js, _ := jetstream.New(b.Client().Conn())
	check(t, js, events.UploadStream, natsjs.DefaultUploadMaxBytes, 14*24*time.Hour)
	check(t, js, natsjs.DeadLetterStream, natsjs.DefaultDeadLetterMaxBytes, 14*24*time.Hour)

	cfg := testConfig(t.TempDir(), "north")
	cfg.Ingest = natsjs.IngestPolicy{UploadMaxBytes: 3 << 20, DeadLetterMaxBytes: 1 << 20, UploadRetention: 48 * time.Hour, DeadLetterRetention: 24 * time.Hour}
	b = openBroker(t, cfg)
	js, _ = jetstream.New(b.Client().Conn())
	check(t, js, events.UploadStream, 3<<20, 48*time.Hour)
	check(t, js, natsjs.DeadLetterStream, 1<<20, 24*time.Hour)
}

// TestBroker_Quota_Flood: a device that uploads far more than FS_UPLOADS
// holds cannot grow it past its bound, and another device's upload
// afterwards is stored and accepted by ingest (the flood drops the
// oldest uploads, already applied, rather than refusing anyone's).
func TestBroker_Quota_Flood(t *testing.T) {
	const limit = 1 << 20
	cfg := testConfig(t.TempDir(), "north")
	cfg.Ingest.UploadMaxBytes = limit
	b := openBroker(t, cfg)
	a := fstest.MustConnectDevice(t, b.ClientURL(), b.Authority(), "A", "north")
	other := fstest.MustConnectDevice(t, b.ClientURL(), b.Authority(), "B", "north")
	pad := strings.Repeat("x", 100<<10)
	for i := range 40 { // 4 MiB of uploads into a 1 MiB stream
		e := fstest.Change(t, "north", events.ChannelEvents, "event", "flood"+string(rune('a'+i%26))+string(rune('a'+i/26)), map[string]any{"pad": pad})
		e.Origin = events.Origin{DeviceID: "A", MutationID: "m" + e.RecordID}
		if _, err := a.PublishUpload(ctxT(t), e); err != nil {
			t.Fatalf("flood upload %d refused: %v", i, err)
		}
	}
	st, err := b.Client().StreamState(ctxT(t), events.UploadStream)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(b.Client().Conn())
	s, _ := js.Stream(ctxT(t), events.UploadStream)
	info, err := s.Info(ctxT(t))
	if err != nil || info.State.Bytes > limit || st.Msgs >= 40 {
		t.Fatalf("FS_UPLOADS holds %d bytes in %d messages (%v), want at most %d bytes", info.State.Bytes, st.Msgs, err, limit)
	}
	e := fstest.Change(t, "north", events.ChannelEvents, "event", "b1", map[string]any{"ok": true})
	e.Origin = events.Origin{DeviceID: "B", MutationID: "mb1"}
	if _, err := other.PublishUpload(ctxT(t), e); err != nil {
		t.Fatalf("B's upload after the flood: %v", err)
	}
	log, err := b.Client().MutationLog(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var res *events.Result
	fstest.Eventually(t, 15*time.Second, func() bool {
		res, _ = log.Get(ctxT(t), "B", "mb1")
		return res != nil
	}, "ingest result of B's upload after A's flood")
	if res.Status != events.Accepted {
		t.Fatalf("B's upload: %+v, want accepted", res)
	}
}
