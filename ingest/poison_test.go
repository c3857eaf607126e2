package ingest

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// poisonBodies are record bodies that are msgpack maps by their first
// byte only: what older builds let through to every device.
func poisonBodies(tb testing.TB) map[string][]byte {
	ts, err := msgpack.Marshal(map[string]any{"at": time.Unix(1700000000, 0)})
	if err != nil {
		tb.Fatal(err)
	}
	return map[string][]byte{
		"m-intkey": {0x81, 0x01, 0xa1, 'x'},             // {1: "x"}
		"m-nested": {0x81, 0xa1, 'm', 0x81, 0x07, 0x01}, // {"m": {7: 1}}
		"m-ext":    {0x81, 0xa1, 'e', 0xd4, 0x05, 0x00}, // {"e": extension type 5}
		"m-time":   ts,                                  // {"at": msgpack timestamp}
	}
}

// TestIngester_Run_PoisonBodiesRejectedAndDeadLettered: a device upload
// whose body is not a plain msgpack map is answered rejected (reason
// invalid, naming the body), dead-lettered with its bytes, and never
// reaches the org stream; ingest goes on with the next upload.
func TestIngester_Run_PoisonBodiesRejectedAndDeadLettered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	tab1 := h.watchResults("tab1")
	run := h.start(Options{})
	var seqs []uint64
	var muts []string
	sent := map[string][]byte{}
	for mut, body := range poisonBodies(t) {
		id := "r" + mut
		addr := events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: id}
		data := reencode(t, mutation(t, "tab1", mut, "north", id, 0, "", map[string]any{"v": 1}),
			map[string]any{"body": msgpack.RawMessage(body)})
		seqs = append(seqs, h.rawUpload(uploadSubject(t, "tab1", addr), data, "tab1."+mut))
		muts, sent[mut] = append(muts, mut), data
	}
	rs := tab1.wait(t, muts...)
	for _, mut := range muts {
		wantResult(t, rs[mut], "tab1", mut, events.Rejected, events.ReasonInvalid)
		if !strings.Contains(rs[mut].Message, "body") {
			t.Errorf("%s rejected with %q, want the message to name the body", mut, rs[mut].Message)
		}
	}
	h.waitHandled(seqs...)
	if got := h.deadLetters(); got["fs.dlq.invalid"] != uint64(len(muts)) || len(got) != 1 {
		t.Errorf("dead letters = %v, want %d on fs.dlq.invalid", got, len(muts))
	}
	dl, err := h.js.Stream(testCtx(t), natsjs.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	for i := range muts {
		m, err := dl.GetMsg(testCtx(t), uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if mut := strings.TrimPrefix(m.Header.Get(events.AddressHeader), "north.events.event.r"); !bytes.Equal(m.Data, sent[mut]) ||
			m.Header.Get("Fs-Original-Subject") != "fs.up.tab1" {
			t.Errorf("dead letter %d from %s (%s) does not hold the upload's bytes", i+1, m.Header.Get("Fs-Original-Subject"), m.Header.Get(events.AddressHeader))
		}
	}
	if dev := fromDevices(h.orgChanges("north")); len(dev) != 0 {
		t.Fatalf("poison uploads reached the org stream: %+v", dev)
	}

	run.assertRunning(t)
	h.upload(mutation(t, "tab1", "m-good", "north", "rg", 0, "", map[string]any{"v": 1}))
	wantResult(t, tab1.wait(t, "m-good")["m-good"], "tab1", "m-good", events.Accepted, "")
	run.assertRunning(t)
}

// TestIngester_Run_ConflictOnUnreadableLatest: a record whose latest
// change an older build stored with a poison body still answers a stale
// mutation with a conflict at the right version, without claiming the
// record was deleted.
func TestIngester_Run_ConflictOnUnreadableLatest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	tab1 := h.watchResults("tab1")
	h.start(Options{})
	old := reencode(t, serverChange(t, "north", "rp", map[string]any{"v": 1}),
		map[string]any{"body": msgpack.RawMessage(poisonBodies(t)["m-intkey"])})
	pa, err := h.js.PublishMsg(testCtx(t), &nats.Msg{Subject: "fs.org.north.events.event.rp", Data: old})
	if err != nil {
		t.Fatal(err)
	}
	h.upload(mutation(t, "tab1", "m-stale", "north", "rp", 0, "", map[string]any{"v": 2}))
	r := tab1.wait(t, "m-stale")["m-stale"]
	wantResult(t, r, "tab1", "m-stale", events.Conflict, "")
	if r.ServerVersion != pa.Sequence || r.ServerDeleted || r.ServerBody != nil {
		t.Fatalf("conflict = version %d deleted %v body %x, want version %d, not deleted, no body", r.ServerVersion,
			r.ServerDeleted, r.ServerBody, pa.Sequence)
	}
}
