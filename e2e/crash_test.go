package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

func config() agent.Config {
	return agent.Config{DeviceID: "tab1", OrgUnits: []string{"north"}, BatchSize: 200}.WithDefaults()
}

// queueWrites writes n changes to records records (in order) on an
// offline device whose store is at path.
func queueWrites(t *testing.T, path string, n, records int) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := agent.NewSyncer(config(), nil, db, nil)
	for i := 0; i < n; i++ {
		_, err := s.Write(ctx, agent.WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event",
			RecordID: fmt.Sprintf("r%03d", i%records), Body: map[string]any{"n": i}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// settle uploads and applies results until nothing is pending.
func settle(t *testing.T, s *agent.Syncer, db *store.DB) {
	t.Helper()
	ctx := context.Background()
	var c map[string]int
	fstest.Eventually(t, 60*time.Second, func() bool {
		s.Upload(ctx) // errors while the broker restarts are retried
		s.Results(ctx)
		var err error
		if c, err = db.OutboxCounts(ctx); err != nil {
			t.Fatal(err)
		}
		return c[store.StateQueued]+c[store.StateSent]+c[store.StateConflict]+c[store.StateRejected] == 0
	}, "the outbox to settle; counts %v", &c)
}

// requireExactlyOnce checks the stream holds each of n mutations exactly
// once, in write order per record (bodies carry the write index).
func requireExactlyOnce(t *testing.T, b *fstest.Broker, n int) {
	t.Helper()
	changes := b.DeviceChanges(t, "north")
	seen, last := map[string]bool{}, map[string]int{}
	for _, e := range changes {
		if seen[e.Origin.MutationID] {
			t.Fatalf("mutation %s applied twice", e.Origin.MutationID)
		}
		seen[e.Origin.MutationID] = true
		i := bodyIndex(t, e)
		if prev, ok := last[e.RecordID]; ok && i <= prev {
			t.Fatalf("record %s: write %d applied after write %d", e.RecordID, i, prev)
		}
		last[e.RecordID] = i
	}
	if len(changes) != n {
		t.Fatalf("stream holds %d device changes, want exactly %d", len(changes), n)
	}
}

func TestAgent_KilledBetweenPublishAndRecord(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	startIngest(t, b)
	path := t.TempDir() + "/device.db"
	queueWrites(t, path, 3, 3)
	up, published := startChild(t, "uploader", "published", "FS_BROKER="+b.URL(), "FS_CREDS="+b.DeviceCreds(t, uploaderDevice, "north"), "FS_DB="+path)
	up.kill() // SIGKILL after the publish, before the store recorded it

	ctx := context.Background()
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	queued, err := db.Queued(ctx, 10)
	if err != nil || len(queued) != 3 || queued[0].MutationID != published {
		t.Fatalf("after the kill %s should still be queued first: %+v %v", published, queued, err)
	}
	settle(t, agent.NewSyncer(config(), b.Client, db, nil), db)
	requireExactlyOnce(t, b, 3)
}

func TestBroker_KilledMidIngest(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	env := []string{"FS_DIR=" + dir, "FS_PORT=" + strconv.Itoa(port)}
	brk, url := startChild(t, "broker", "ready", env...)
	path := t.TempDir() + "/device.db"
	const writes = 3000
	queueWrites(t, path, writes, 300) // 10 per record: below the 16 versions a stream keeps

	ctx := context.Background()
	// The broker child made its keys in dir: issue the device's credentials
	// from them as an operator would, and take the broker's own identity
	// for the checks.
	auth, err := natsauth.OpenExisting(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	inbox, _ := events.DeviceInboxPrefix("tab1")
	client, err := natsjs.Connect(url, natsjs.ConnectOptions{Name: "device", RetryOnFailedConnect: true,
		Credentials: fstest.MustDeviceCreds(t, auth, "tab1", "north"), InboxPrefix: inbox})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	admin := connectAdmin(t, url, auth)
	db, err := store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := agent.NewSyncer(config(), client, db, nil)
	uploaded := make(chan struct{})
	go func() {
		defer close(uploaded)
		s.Upload(ctx) // fails part-way when the broker dies
	}()
	decided := killAfterResults(t, admin, brk, writes/10)
	<-uploaded
	if decided >= writes {
		t.Fatalf("ingest finished all %d before the kill; the test killed nothing in flight", writes)
	}
	t.Logf("broker killed after %d of %d results", decided, writes)
	startChild(t, "broker", "ready", env...)
	settle(t, s, db)
	requireExactlyOnce(t, &fstest.Broker{Client: admin}, writes)
}

// connectAdmin connects to url as the broker's own administrator
// identity, signed with the keys of auth.
func connectAdmin(t *testing.T, url string, auth *natsauth.Authority) *natsjs.Client {
	t.Helper()
	userJWT, seed, err := auth.Component(natsauth.RoleBroker)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.UserJWTAndSeed(userJWT, seed), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := natsjs.NewClient(nc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// killAfterResults SIGKILLs the broker once at least min results exist
// and returns how many there were.
func killAfterResults(t *testing.T, client *natsjs.Client, brk *child, min int) int {
	t.Helper()
	js, err := jetstream.New(client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	defer brk.kill()
	n := 0
	fstest.Eventually(t, 30*time.Second, func() bool {
		st, err := js.Stream(context.Background(), events.ResultStream)
		if err != nil {
			return false
		}
		n = int(st.CachedInfo().State.Msgs)
		return n >= min
	}, "%d results to kill the broker after", min)
	return n
}

func startIngest(t *testing.T, b *fstest.Broker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ingest.New(b.IngestClient(t), ingest.Options{}).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func bodyIndex(t *testing.T, e *events.Envelope) int {
	t.Helper()
	var m map[string]int
	if err := msgpackUnmarshal(e.Body, &m); err != nil {
		t.Fatal(err)
	}
	return m["n"]
}
