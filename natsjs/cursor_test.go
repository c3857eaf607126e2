package natsjs_test

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

func mustDurable(tb testing.TB, device string, ch events.Channel) string {
	tb.Helper()
	d, err := natsjs.DurableName(device, ch)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// publishSeqs publishes n upserts of distinct events records of unit and
// returns their versions.
func publishSeqs(tb testing.TB, b *fstest.Broker, unit string, n int) []uint64 {
	tb.Helper()
	out := make([]uint64, n)
	for i := range out {
		out[i] = publishEvent(tb, b, unit, fmt.Sprintf("r%03d", i), 1)
	}
	return out
}

// waitNoPullWaiting waits until the broker holds no pull request of a closed
// cursor on durable.
func waitNoPullWaiting(tb testing.TB, b *fstest.Broker, stream, durable string) {
	tb.Helper()
	ctx := testCtx(tb)
	if err := b.Client.Conn().Flush(); err != nil {
		tb.Fatal(err)
	}
	cons, err := mustJS(tb, b).Consumer(ctx, stream, durable)
	if err != nil {
		tb.Fatal(err)
	}
	var waiting []int
	fstest.Eventually(tb, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		waiting = append(waiting[:0], info.NumWaiting)
		return info.NumWaiting == 0
	}, "durable %s to have no pull requests waiting; still waiting %v", durable, &waiting)
}

// waitConsumerPending waits until the broker counts n messages pending on
// durable (it updates the count asynchronously after a publish).
func waitConsumerPending(tb testing.TB, b *fstest.Broker, stream, durable string, n uint64) {
	tb.Helper()
	ctx := testCtx(tb)
	cons, err := mustJS(tb, b).Consumer(ctx, stream, durable)
	if err != nil {
		tb.Fatal(err)
	}
	var pending []uint64
	fstest.Eventually(tb, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		pending = append(pending[:0], info.NumPending)
		return info.NumPending == n
	}, "durable %s to have %d pending; has %v", durable, n, &pending)
}

func TestDurableName(t *testing.T) {
	if d := mustDurable(t, "tab-1", ev); d != "fsdev_tab-1_events" {
		t.Fatalf("durable %q", d)
	}
	if _, err := natsjs.DurableName("a.b", ev); !errors.Is(err, events.ErrBadSubject) {
		t.Fatalf("bad device: %v", err)
	}
	if _, err := natsjs.DurableName("tab", "gossip"); err == nil {
		t.Fatal("bad channel accepted")
	}
}

func TestClient_OpenCursor_SnapshotDeliversLatestPerRecord(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	want := map[string]uint64{}
	for rev := 1; rev <= 3; rev++ {
		want["fs.org.north.events.event.e1"] = publishEvent(t, b, "north", "e1", rev)
		if rev <= 2 {
			want["fs.org.north.events.event.e2"] = publishEvent(t, b, "north", "e2", rev)
		}
	}
	want["fs.org.north.events.action.a1"] = b.MustPublish(t, fstest.Change(t, "north", ev, "action", "a1", map[string]any{"v": 1}))
	publishEvent(t, b, "north", "gone", 1)
	want["fs.org.north.events.event.gone"] = b.MustPublish(t, fstest.Change(t, "north", ev, "event", "gone", nil)) // tombstone is latest
	// Another channel of the same unit stream is not delivered.
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelAdmin, "setting", "s1", map[string]any{"v": 1}))

	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: mustDurable(t, "tab1", ev), Snapshot: true})
	if !c.Recreated {
		t.Fatal("new durable not reported as created")
	}
	if c.CaughtUp() {
		t.Fatal("caught up before reading a pending snapshot")
	}
	if c.Pending() != uint64(len(want)) {
		t.Fatalf("Pending() = %d, want %d records", c.Pending(), len(want))
	}
	ds := drain(t, c)
	got := map[string]uint64{}
	for _, d := range ds {
		if _, dup := got[d.Subject]; dup {
			t.Fatalf("subject %s delivered twice", d.Subject)
		}
		got[d.Subject] = d.StreamSeq
		if _, err := events.Decode(d.Data); err != nil {
			t.Fatalf("delivery %d does not decode: %v", d.StreamSeq, err)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot delivered %v, want latest versions %v", got, want)
	}
	if !c.CaughtUp() || ds[len(ds)-1].Pending != 0 {
		t.Fatalf("not caught up after the snapshot (last pending %d)", ds[len(ds)-1].Pending)
	}
	if !slices.IsSorted(seqs(ds)) {
		t.Fatalf("deliveries out of stream order: %v", seqs(ds))
	}
	// Caught up: Next returns at once with nothing.
	start := time.Now()
	more, err := c.Next(testCtx(t), 10)
	if err != nil || len(more) != 0 || time.Since(start) > time.Second {
		t.Fatalf("Next after catching up: %d deliveries, %v, took %v", len(more), err, time.Since(start))
	}
}

func TestClient_OpenCursor_SnapshotSkipsAtOrBelowAfter(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	v1 := publishEvent(t, b, "north", "e1", 1)
	v2 := publishEvent(t, b, "north", "e2", 1)
	v3 := publishEvent(t, b, "north", "e3", 1)
	// An interrupted snapshot that applied up to v2 resumes from a new durable.
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "snap", Snapshot: true, After: v2})
	if got := seqs(drain(t, c)); !reflect.DeepEqual(got, []uint64{v3}) {
		t.Fatalf("resumed snapshot delivered %v, want only [%d] (skipping %d, %d)", got, v3, v1, v2)
	}
}

func TestClient_OpenCursor_AfterDeliversOnlyLater(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	var evSeqs []uint64
	for i := 0; i < 6; i++ {
		evSeqs = append(evSeqs, publishEvent(t, b, "north", "e1", i)) // versions of one record: all kept in delta mode
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelDocuments, "document", "d1", map[string]any{"i": i}))
	}
	after := evSeqs[2]
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "delta", After: after})
	ds := drain(t, c)
	if got, want := seqs(ds), evSeqs[3:]; !reflect.DeepEqual(got, want) {
		t.Fatalf("After=%d delivered %v, want %v", after, got, want)
	}
	for _, d := range ds {
		if d.StreamSeq <= after {
			t.Fatalf("delivered seq %d <= After %d", d.StreamSeq, after)
		}
	}
	if c.Pending() != uint64(len(ds)) {
		t.Fatalf("Pending() = %d, delivered %d", c.Pending(), len(ds))
	}
}

func TestCursor_PendingMatchesDeliveries(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	all := publishSeqs(t, b, "north", 37)
	// A small batch byte limit makes the cursor return many batches.
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "p", BatchBytes: 200})
	if c.Pending() != 37 {
		t.Fatalf("Pending() = %d, want 37", c.Pending())
	}
	ds := drain(t, c)
	if uint64(len(ds)) != c.Pending() || !reflect.DeepEqual(seqs(ds), all) {
		t.Fatalf("delivered %v, want %v", seqs(ds), all)
	}
	for i, d := range ds {
		if d.Pending != uint64(len(ds)-1-i) {
			t.Fatalf("delivery %d: Pending %d, want %d", i, d.Pending, len(ds)-1-i)
		}
	}
}

func TestClient_OpenCursor_EmptyStreamIsCaughtUp(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	for _, snapshot := range []bool{true, false} {
		c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: fmt.Sprintf("empty-%v", snapshot), Snapshot: snapshot})
		if !c.CaughtUp() || c.Pending() != 0 {
			t.Fatalf("snapshot=%v: CaughtUp %v Pending %d on an empty stream", snapshot, c.CaughtUp(), c.Pending())
		}
		start := time.Now()
		ds, err := c.Next(testCtx(t), 10)
		if err != nil || len(ds) != 0 || time.Since(start) > time.Second {
			t.Fatalf("snapshot=%v: Next = %d, %v after %v", snapshot, len(ds), err, time.Since(start))
		}
	}
	// Tenant-wide admin data has its own (empty) stream too.
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "", Channel: events.ChannelAdmin, Durable: "tenant"})
	if !c.CaughtUp() {
		t.Fatal("empty tenant stream not caught up")
	}
}

func TestClient_OpenCursor_Tenant(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	v := b.MustPublish(t, fstest.Change(t, "", events.ChannelAdmin, "setting", "s1", map[string]any{"v": 1}))
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelAdmin, "setting", "s1", map[string]any{"v": 1}))
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "", Channel: events.ChannelAdmin, Durable: "tenant", Snapshot: true})
	ds := drain(t, c)
	if len(ds) != 1 || ds[0].StreamSeq != v || ds[0].Subject != "fs.tenant.admin.setting.s1" {
		t.Fatalf("tenant cursor delivered %+v", ds)
	}
}

func TestClient_OpenCursor_UnknownUnit(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	_, err := b.Client.OpenCursor(testCtx(t), natsjs.CursorSpec{Unit: "nowhere", Channel: ev, Durable: "x"})
	if !errors.Is(err, natsjs.ErrUnknownUnit) {
		t.Fatalf("cursor on a unit without stream: %v, want ErrUnknownUnit", err)
	}
	if _, err := b.Client.OpenCursor(testCtx(t), natsjs.CursorSpec{Unit: "", Channel: ev, Durable: "x"}); err == nil {
		t.Fatal("tenant cursor on the events channel accepted")
	}
}

func TestClient_OpenCursor_ReusesOrRecreatesDurable(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	all := publishSeqs(t, b, "north", 5)
	durable := mustDurable(t, "tab1", ev)
	spec := natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: durable}

	c := mustOpenCursor(t, b, spec)
	if !c.Recreated {
		t.Fatal("first open did not create the durable")
	}
	if got := seqs(drain(t, c)); !reflect.DeepEqual(got, all) {
		t.Fatalf("first read %v, want %v", got, all)
	}
	c.Close()
	last := all[len(all)-1]

	// The durable's position equals the checkpoint and no closed reader's
	// pull request waits on it: it is reused.
	waitNoPullWaiting(t, b, "FS_ORG_north", durable)
	spec.After = last
	c = mustOpenCursor(t, b, spec)
	if c.Recreated {
		t.Fatalf("durable at the checkpoint (%d) was re-created", last)
	}
	if !c.CaughtUp() {
		t.Fatal("reused durable at the end not caught up")
	}
	c.Close()

	// The checkpoint is behind the durable (the device lost applied data):
	// it is re-created from the checkpoint and redelivers what follows.
	spec.After = all[1]
	c = mustOpenCursor(t, b, spec)
	if !c.Recreated {
		t.Fatal("durable ahead of the checkpoint was reused")
	}
	if got := seqs(drain(t, c)); !reflect.DeepEqual(got, all[2:]) {
		t.Fatalf("after re-create from %d: %v, want %v", spec.After, got, all[2:])
	}
	c.Close()

	// Reused again at its new position, it reads what was published since,
	// and nothing twice. The closed cursor's pull request must be gone from
	// the broker first, or it would swallow the new message (see Close), and
	// the broker counts a new message as pending a moment after its ack.
	waitNoPullWaiting(t, b, "FS_ORG_north", durable)
	next := publishEvent(t, b, "north", "late", 1)
	waitConsumerPending(t, b, "FS_ORG_north", durable, 1)
	spec.After = last
	c = mustOpenCursor(t, b, spec)
	if c.Recreated {
		t.Fatal("durable at the checkpoint was re-created")
	}
	if c.Pending() != 1 {
		t.Fatalf("Pending() = %d, want 1", c.Pending())
	}
	if got := seqs(drain(t, c)); !reflect.DeepEqual(got, []uint64{next}) {
		t.Fatalf("reused durable read %v; want [%d]", got, next)
	}
}

func TestClient_DeleteDurable(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	all := publishSeqs(t, b, "north", 3)
	spec := natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "gone"}
	c := mustOpenCursor(t, b, spec)
	drain(t, c)
	c.Close()

	if err := b.Client.DeleteDurable(ctx, "north", "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := mustJS(t, b).Consumer(ctx, "FS_ORG_north", "gone"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("durable still there: %v", err)
	}
	if err := b.Client.DeleteDurable(ctx, "north", "gone"); err != nil {
		t.Fatalf("deleting a missing durable: %v", err)
	}

	spec.After = all[0]
	c = mustOpenCursor(t, b, spec)
	if !c.Recreated {
		t.Fatal("open after DeleteDurable did not re-create")
	}
	if got := seqs(drain(t, c)); !reflect.DeepEqual(got, all[1:]) {
		t.Fatalf("re-created durable delivered %v, want %v", got, all[1:])
	}
}

func TestClient_OpenCursor_CheckpointTooOld(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	all := publishSeqs(t, b, "north", 6)
	s, err := mustJS(t, b).Stream(ctx, "FS_ORG_north")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeKeep(2)); err != nil {
		t.Fatal(err)
	}
	st, err := b.Client.UnitState(ctx, "north")
	if err != nil || st.FirstSeq != all[4] || st.Msgs != 2 {
		t.Fatalf("after purge: %+v (%v), want first seq %d", st, err, all[4])
	}

	for _, after := range []uint64{all[0], all[2]} {
		_, err := b.Client.OpenCursor(ctx, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "old", After: after})
		if !errors.Is(err, natsjs.ErrCheckpointTooOld) {
			t.Fatalf("After=%d with the stream starting at %d: %v, want ErrCheckpointTooOld", after, st.FirstSeq, err)
		}
	}
	// A checkpoint right before the first message has lost nothing.
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "old", After: all[3]})
	if got := seqs(drain(t, c)); !reflect.DeepEqual(got, all[4:]) {
		t.Fatalf("After=%d delivered %v, want %v", all[3], got, all[4:])
	}
	// A snapshot (full resync) works whatever the checkpoint.
	c = mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "resync", Snapshot: true})
	if got := seqs(drain(t, c)); !reflect.DeepEqual(got, all[4:]) {
		t.Fatalf("resync delivered %v, want %v", got, all[4:])
	}
}

// A stream purged of everything after the checkpoint still lost changes the
// device never read: FirstSeq is past After+1 even though Msgs is 0.
func TestClient_OpenCursor_CheckpointTooOldAfterFullPurge(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	all := publishSeqs(t, b, "north", 6)
	s, err := mustJS(t, b).Stream(ctx, "FS_ORG_north")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := b.Client.OpenCursor(ctx, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "old", After: all[1]})
	if c != nil {
		c.Close()
	}
	if !errors.Is(err, natsjs.ErrCheckpointTooOld) {
		t.Fatalf("After=%d on a stream emptied up to %d: %v, want ErrCheckpointTooOld", all[1], all[5], err)
	}
}

// TestCursor_Next_BoundedByBytes: with large records the cursor holds and
// returns a bounded number of bytes, not a number of messages.
func TestCursor_Next_BoundedByBytes(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	const n, size = 24, 100 << 10
	blob := strings.Repeat("x", size)
	var all []uint64
	for i := 0; i < n; i++ {
		all = append(all, b.MustPublish(t, fstest.Change(t, "north", ev, "event", fmt.Sprintf("big%02d", i), map[string]any{"blob": blob})))
	}
	const batchBytes = 250 << 10
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "big", BufferBytes: 1, BatchBytes: batchBytes})
	ctx := testCtx(t)
	cons, err := mustJS(t, b).Consumer(ctx, "FS_ORG_north", "big")
	if err != nil {
		t.Fatal(err)
	}
	// The smallest buffer holds two of the largest messages: about five of
	// these, never all 24.
	limit := uint64(2*(events.MaxMessageSize+4096)/size + 1)
	var got []uint64
	for !c.CaughtUp() {
		ds, err := c.Next(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		bytes := 0
		for _, d := range ds {
			bytes += len(d.Data)
		}
		if len(ds) > 1 && bytes-len(ds[len(ds)-1].Data) >= batchBytes {
			t.Fatalf("batch of %d messages, %d bytes: over the %d byte limit before its last message", len(ds), bytes, batchBytes)
		}
		got = append(got, seqs(ds)...)
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ahead := info.Delivered.Stream - got[len(got)-1]; ahead > limit {
			t.Fatalf("after reading seq %d the broker had delivered up to %d: %d messages buffered, limit %d",
				got[len(got)-1], info.Delivered.Stream, ahead, limit)
		}
	}
	if !reflect.DeepEqual(got, all) {
		t.Fatalf("delivered %v, want %v", got, all)
	}
}

// TestCursor_Next_SnapshotOfLargeRecordsLosesNothing: a snapshot of large
// records, read through the smallest buffer, delivers every record (the
// broker drops last-per-subject messages that do not fit a byte-limited
// pull) and holds a bounded number of them.
func TestCursor_Next_SnapshotOfLargeRecordsLosesNothing(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	const n, size = 100, 200 << 10
	blob := strings.Repeat("x", size)
	var all []uint64
	for i := 0; i < n; i++ {
		all = append(all, b.MustPublish(t, fstest.Change(t, "north", ev, "event", fmt.Sprintf("big%03d", i), map[string]any{"blob": blob})))
	}
	// Small events of another channel make the stream's average misleading.
	for i := 0; i < 2*n; i++ {
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelAdmin, "setting", fmt.Sprintf("s%03d", i), map[string]any{"i": i}))
	}
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "snapbig", Snapshot: true, BufferBytes: 1 << 20})
	ctx := testCtx(t)
	cons, err := mustJS(t, b).Consumer(ctx, "FS_ORG_north", "snapbig")
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for !c.CaughtUp() {
		ds, err := c.Next(ctx, 1000)
		if err != nil {
			t.Fatalf("after %d of %d records: %v", len(got), n, err)
		}
		got = append(got, seqs(ds)...)
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ahead := info.Delivered.Consumer - uint64(len(got)); ahead > (1<<20)/size+1 {
			t.Fatalf("after reading %d the broker had delivered %d: %d records of %d KiB buffered for a 1 MiB buffer",
				len(got), info.Delivered.Consumer, ahead, size>>10)
		}
	}
	if !reflect.DeepEqual(got, all) {
		t.Fatalf("snapshot delivered %d records, want all %d: %v", len(got), n, got)
	}
}

// TestClient_OpenCursor_SeesAcknowledgedChangesAtOnce: a delta cursor
// opened on a reused durable right after a publish was acknowledged
// delivers it, although the broker updates the consumer's pending count a
// moment later: a sync must never call itself complete without a change
// the server had already accepted.
func TestClient_OpenCursor_SeesAcknowledgedChangesAtOnce(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	after := publishEvent(t, b, "north", "r0", 0)
	c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "fresh"})
	drain(t, c)
	c.Close()
	for i := 1; i <= 100; i++ {
		seq := publishEvent(t, b, "north", fmt.Sprintf("r%d", i), i)
		c := mustOpenCursor(t, b, natsjs.CursorSpec{Unit: "north", Channel: ev, Durable: "fresh", After: after})
		got := seqs(drain(t, c))
		c.Close()
		if !reflect.DeepEqual(got, []uint64{seq}) {
			t.Fatalf("round %d: cursor opened after seq %d was acknowledged delivered %v, want [%d]", i, seq, got, seq)
		}
		after = seq
	}
}
