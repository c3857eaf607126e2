package agent

import (
	"context"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

// agentAt opens the agent of dir as if the clock said now.
func agentAt(t *testing.T, dir string, now time.Time) *Agent {
	t.Helper()
	cfg := testConfig("tab1", "north")
	cfg.DataDir, cfg.Clock = dir, func() time.Time { return now }
	a, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func recordCount(t *testing.T, a *Agent) int {
	t.Helper()
	n, err := a.DB().Count(context.Background(), store.Query{Channel: events.ChannelEvents, Unit: store.AnyUnit})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAgent_Open_RetentionWipe(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	dir := t.TempDir()
	day := 24 * time.Hour
	t0 := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

	a := agentAt(t, dir, t0)
	if _, err := NewSyncer(a.Config(), deviceClient(t, b, a.Config()), a.DB(), nil).Sync(ctx, ScopeFull); err != nil {
		t.Fatal(err)
	}
	a.recordCompletion(ctx, ScopeFull, t0, true)
	if _, err := a.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "unsent", Body: map[string]any{"y": 1}}); err != nil {
		t.Fatal(err)
	}
	a.Close()

	a = agentAt(t, dir, t0.Add(9*day)) // day 9: still there; the user signs in
	if recordCount(t, a) != 2 {
		t.Fatalf("data gone after 9 days")
	}
	if err := a.SignIn(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	a.Close()

	a = agentAt(t, dir, t0.Add(18*day)) // 9 days after the sign-in: kept
	if recordCount(t, a) != 2 || a.wiped != nil {
		t.Fatal("the sign-in on day 9 should have restarted the count")
	}
	a.Close()

	a = agentAt(t, dir, t0.Add(19*day+time.Hour)) // more than 10 days after the sign-in
	defer a.Close()
	if n := recordCount(t, a); n != 0 {
		t.Fatalf("%d records left after 10 unused days", n)
	}
	if a.wiped == nil || a.wiped.Unsent != 1 || a.wiped.Records != 1 {
		t.Fatalf("wipe report %+v: want 1 record and 1 unsent write counted", a.wiped)
	}
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.OnlineOnly || st.Wiped == nil {
		t.Fatalf("after a wipe the device is online only again and says why: %+v", st)
	}
}

// TestAgent_PurgeRetained_OnItsTimer: an accepted device-created event
// whose retention ended is removed by the purge timer, with no sync and no
// other activity.
func TestAgent_PurgeRetained_OnItsTimer(t *testing.T) {
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	startIngest(t, b, ingest.Rights{})
	cfg := testConfig("tab1", "north")
	zero := 0
	cfg.BrokerURL, cfg.DataDir, cfg.RetainEventsDays, cfg.RetentionPurgeInterval = b.URL(), t.TempDir(), &zero, 100*time.Millisecond
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	a := startQuietAgent(t, cfg)
	fstest.Eventually(t, 30*time.Second, func() bool { return settled(a) }, "agent synced")
	if _, err := a.Write(ctx, WriteRequest{OrgUnit: "north", Channel: "events", Kind: "event", RecordID: "mine", Body: map[string]any{"x": 1}}); err != nil {
		t.Fatal(err)
	}
	waitOutboxEmpty(t, a, 10*time.Second)
	fstest.Eventually(t, 10*time.Second, func() bool { return recordCount(t, a) == 0 }, "accepted event removed by the purge timer")
}
