package ingest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

func TestIngester_Run_MalformedUploadsAreRejectedAndDeadLettered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	tab1 := h.watchResults("tab1")
	tab2 := h.watchResults("tab2")
	run := h.start(Options{})
	subj := func(dev, id string) string {
		return uploadSubject(t, dev, events.Address{OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: id})
	}
	var seqs []uint64

	// (a) bytes that are no envelope; the dedupe id still names the mutation.
	garbage := []byte{0xc1, 0x00, 0xff, 0x13}
	seqs = append(seqs, h.rawUpload(subj("tab1", "ra"), garbage, "tab1.m-bad"))

	// (b) tab1 uploads an envelope claiming to be tab2's.
	forged := mutation(t, "tab2", "m-wd", "north", "rb", 0, "", map[string]any{"forged": true})
	forgedSeq := h.rawUpload(subj("tab1", "rb"), mustEncode(t, forged), "tab1.m-wd")
	seqs = append(seqs, forgedSeq)

	// (c) an envelope of record rc1 on record rc2's subject (its address
	// header names rc2), and a subject that is no upload subject at all.
	seqs = append(seqs, h.rawUpload(subj("tab1", "rc2"),
		mustEncode(t, mutation(t, "tab1", "m-bs", "north", "rc1", 0, "", map[string]any{"v": 1})), "tab1.m-bs"))
	seqs = append(seqs, h.rawUpload("fs.up.tab1.north.events", []byte("junk"), "tab1.m-short"))

	// (d) a body over events.MaxBodySize.
	big := fstest.Body(t, map[string]any{"blob": strings.Repeat("x", events.MaxBodySize)})
	seqs = append(seqs, h.rawUpload(subj("tab1", "rd"),
		reencode(t, mutation(t, "tab1", "m-big", "north", "rd", 0, "", map[string]any{"v": 1}), map[string]any{"body": msgpack.RawMessage(big)}),
		"tab1.m-big"))

	// (e) a schema version from the future.
	seqs = append(seqs, h.rawUpload(subj("tab1", "re"),
		reencode(t, mutation(t, "tab1", "m-v2", "north", "re", 0, "", map[string]any{"v": 1}), map[string]any{"v": events.SchemaVersion + 1}),
		"tab1.m-v2"))

	rs := tab1.wait(t, "m-bad", "m-wd", "m-bs", "m-big", "m-v2")
	wantResult(t, rs["m-bad"], "tab1", "m-bad", events.Rejected, events.ReasonInvalid)
	wantResult(t, rs["m-wd"], "tab1", "m-wd", events.Rejected, events.ReasonWrongDevice)
	wantResult(t, rs["m-bs"], "tab1", "m-bs", events.Rejected, events.ReasonBadSubject)
	wantResult(t, rs["m-big"], "tab1", "m-big", events.Rejected, events.ReasonTooLarge)
	wantResult(t, rs["m-v2"], "tab1", "m-v2", events.Rejected, "unknown_version")
	h.waitHandled(seqs...)

	want := map[string]uint64{"fs.dlq.invalid": 1, "fs.dlq.wrong_device": 1, "fs.dlq.bad_subject": 2,
		"fs.dlq.too_large": 1, "fs.dlq.unknown_version": 1}
	got := h.deadLetters()
	for s, n := range want {
		if got[s] != n {
			t.Errorf("%s holds %d dead letters, want %d", s, got[s], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("dead letters = %v, want %v", got, want)
	}
	dl, err := h.js.Stream(testCtx(t), natsjs.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dl.GetLastMsgForSubject(testCtx(t), "fs.dlq.invalid")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Data, garbage) || m.Header.Get("Fs-Original-Subject") != "fs.up.tab1" || m.Header.Get(events.AddressHeader) != "north.events.event.ra" {
		t.Errorf("dead letter = %x from %q (%q), want the upload's bytes %x from fs.up.tab1 (north.events.event.ra)", m.Data,
			m.Header.Get("Fs-Original-Subject"), m.Header.Get(events.AddressHeader), garbage)
	}

	// The forged claim is not held against tab2: nothing answered to it,
	// nothing remembered, and its own mutation m-wd goes through.
	if r := tab2.get("m-wd"); r != nil {
		t.Errorf("tab2 was answered for tab1's forged upload: %+v", r)
	}
	if r := h.remembered("tab2", "m-wd"); r != nil {
		t.Errorf("mutation log holds %+v for tab2's m-wd after tab1's forgery", r)
	}
	h.upload(mutation(t, "tab2", "m-wd", "north", "rb", 0, "", map[string]any{"by": "tab2"}))
	wantResult(t, tab2.wait(t, "m-wd")["m-wd"], "tab2", "m-wd", events.Accepted, "")

	// The ingester survived it all and accepts a good mutation.
	run.assertRunning(t)
	h.upload(mutation(t, "tab1", "m-good", "north", "rg", 0, "", map[string]any{"v": 1}))
	good := tab1.wait(t, "m-good")["m-good"]
	wantResult(t, good, "tab1", "m-good", events.Accepted, "")
	run.assertRunning(t)

	dev := fromDevices(h.orgChanges("north"))
	if len(dev) != 2 || len(ofMutation(dev, "tab2", "m-wd")) != 1 || len(ofMutation(dev, "tab1", "m-good")) != 1 {
		t.Errorf("device changes in the org stream = %+v, want only tab2's m-wd and tab1's m-good", dev)
	}
}
