package ingest

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

// FuzzIngester_Decide drives ingest's upload handler — decide, then
// remembering the result as handle does — with an arbitrary subject,
// payload, dedupe id and delivery count, against one real embedded broker
// started once per fuzz process. Every upload must end one of three ways,
// never silently: an error that retrying can cure (only errWait, the
// broker being healthy), a result (accepted, rejected with a reason, or
// conflict) for the uploading device that the mutation log takes, or —
// when subject and dedupe id name no device and mutation to answer — a
// dead letter. Bytes that are no envelope are rejected.
func FuzzIngester_Decide(f *testing.F) {
	b := fstest.MustStartBroker(f, "north", "south")
	js, err := jetstream.New(b.Client.Conn())
	if err != nil {
		f.Fatal(err)
	}
	setup, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dlq, err := js.Stream(setup, natsjs.DeadLetterStream)
	if err != nil {
		f.Fatal(err)
	}
	in := New(b.Client, Options{Log: slog.New(slog.DiscardHandler)})
	if in.mlog, err = b.Client.MutationLog(setup); err != nil {
		f.Fatal(err)
	}
	deadLetters := func(ctx context.Context, t *testing.T) uint64 {
		info, err := dlq.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	for _, s := range decideSeeds(f) {
		f.Add(s.subject, s.data, s.msgID, s.delivered, s.address)
	}
	f.Fuzz(func(t *testing.T, subject string, data []byte, msgID string, delivered uint8, address string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		before := deadLetters(ctx, t)
		u := &natsjs.Upload{Subject: subject, Data: data, MsgID: msgID, StreamSeq: 1, Delivered: uint64(delivered), Address: address}
		res, err := in.decide(ctx, u)
		switch {
		case err != nil:
			if !errors.Is(err, errWait) {
				t.Fatalf("upload %q: error %v: retrying cannot cure it, the upload would come back for ever", subject, err)
			}
		case res == nil:
			if deadLetters(ctx, t) == before {
				t.Fatalf("upload %q (msg id %q) got no result and was not dead-lettered: silently dropped", subject, msgID)
			}
		default:
			checkDecided(ctx, t, in, u, res)
		}
	})
}

// checkDecided fails t unless res is a complete answer to u that handle
// can remember and deliver to u's device.
func checkDecided(ctx context.Context, t *testing.T, in *Ingester, u *natsjs.Upload, res *events.Result) {
	t.Helper()
	dev, _, err := events.ParseUploadSubject(u.Subject)
	if err != nil || res.DeviceID != dev {
		t.Fatalf("result for device %q on upload subject %q (parse: %v): answers a device that did not upload", res.DeviceID, u.Subject, err)
	}
	switch res.Status {
	case events.Accepted:
		if res.Version == 0 {
			t.Fatalf("accepted without a version: %+v", res)
		}
	case events.Rejected:
		if res.Reason == "" || res.Message == "" {
			t.Fatalf("rejected without a reason: %+v", res)
		}
	case events.Conflict:
	default:
		t.Fatalf("result status %q: %+v", res.Status, res)
	}
	if _, err := events.Decode(u.Data); err != nil && res.Status != events.Rejected {
		t.Fatalf("bytes that are no envelope (%v) got %+v", err, res)
	}
	if err := in.mlog.Put(ctx, res); err != nil {
		t.Fatalf("result %+v cannot be remembered (handle would retry it for ever): %v", res, err)
	}
}

type decideSeed struct {
	subject   string
	data      []byte
	msgID     string
	delivered uint8
	address   string // the Fs-Address header
}

// decideSeeds are one upload of each way decide ends; the same inputs are
// committed under testdata/fuzz/FuzzIngester_Decide.
func decideSeeds(tb testing.TB) []decideSeed {
	addr := func(unit string, ch events.Channel, kind, id string) events.Address {
		return events.Address{OrgUnit: unit, Channel: ch, Kind: kind, RecordID: id}
	}
	up := func(dev string, a events.Address) string { return uploadSubject(tb, dev, a) }
	enc := func(dev, mut string, a events.Address, base uint64, after string) []byte {
		e := mutation(tb, dev, mut, a.OrgUnit, a.RecordID, base, after, map[string]any{"title": "Inspect pump"})
		e.Channel, e.Kind = a.Channel, a.Kind
		return mustEncode(tb, e)
	}
	r1, r2 := addr("north", events.ChannelEvents, "event", "r1"), addr("north", events.ChannelEvents, "event", "r2")
	west, admin := addr("west", events.ChannelEvents, "event", "r1"), addr("north", events.ChannelAdmin, "setting", "s1")
	return []decideSeed{
		{up("tab1", r1), enc("tab1", "m1", r1, 0, ""), "tab1.m1", 1, ""},               // accepted
		{up("tab1", r2), enc("tab1", "m2", r2, 7, ""), "tab1.m2", 1, ""},               // conflict: stale base
		{up("tab1", r2), enc("tab1", "m3", r2, 0, "m-never"), "tab1.m3", 1, ""},        // waits for m-never
		{up("tab1", r2), enc("tab1", "m4", r2, 0, "m-never"), "tab1.m4", maxWaits, ""}, // broken chain
		{up("tab2", r1), enc("tab1", "m5", r1, 0, ""), "tab2.m5", 1, ""},               // wrong device
		{up("tab1", r2), enc("tab1", "m6", r1, 0, ""), "tab1.m6", 1, ""},               // record not the subject's
		{up("tab1", west), enc("tab1", "m7", west, 0, ""), "tab1.m7", 1, ""},           // unknown unit
		{up("tab1", admin), enc("tab1", "m8", admin, 0, ""), "tab1.m8", 1, ""},         // not allowed
		{up("tab1", r1), []byte{0xc1, 0x00, 0xff}, "tab1.m-bad", 1, ""},                // garbage, answerable
		{up("tab1", r1), []byte("junk"), "", 1, ""},                                    // garbage, no mutation
		{"fs.up.tab1.north.events", []byte("junk"), "tab1.m-short", 1, ""},             // no upload subject
		{"fs.up.tab1", enc("tab1", "m9", r1, 0, ""), "tab1.m9", 1, r1.Key()},           // stored per device: accepted
		{"fs.up.tab1", enc("tab1", "m10", r1, 0, ""), "tab1.m10", 1, r2.Key()},         // header not the envelope's record
		{"fs.up.tab1", enc("tab1", "m11", r2, 0, ""), "tab1.m11", 1, ""},               // stored, no header (older agent)
	}
}
