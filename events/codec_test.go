package events_test

import (
	"bytes"
	"errors"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/vmihailenco/msgpack/v5"
)

func mustBody(tb testing.TB, m map[string]any) []byte {
	tb.Helper()
	b, err := msgpack.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func sampleEnvelope(tb testing.TB) *events.Envelope {
	return &events.Envelope{
		EventID: "ev-1", OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event",
		RecordID: "r-42", Op: events.OpUpsert, Body: mustBody(tb, map[string]any{"title": "Inspect pump", "n": 3}),
		SchemaVersion: events.SchemaVersion, Origin: events.Origin{DeviceID: "tab-1", MutationID: "m-7", BaseVersion: 12, After: "m-6"},
		Timestamp: time.Unix(1700000000, 123).UTC(),
	}
}

func TestEncode_RoundTrip(t *testing.T) {
	in := sampleEnvelope(t)
	b, err := events.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := events.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.EventID != in.EventID || out.OrgUnit != in.OrgUnit || out.Channel != in.Channel ||
		out.Kind != in.Kind || out.RecordID != in.RecordID || out.Op != in.Op ||
		!bytes.Equal(out.Body, in.Body) || out.Origin != in.Origin || !out.Timestamp.Equal(in.Timestamp) {
		t.Fatalf("round trip changed the envelope:\n in=%+v\nout=%+v", in, out)
	}
}

func TestEncode_TenantDelete(t *testing.T) {
	in := &events.Envelope{EventID: "e2", Channel: events.ChannelAdmin, Kind: "setting", RecordID: "s1",
		Op: events.OpDelete, SchemaVersion: 1, Timestamp: time.Now()}
	b, err := events.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := events.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.OrgUnit != "" || out.Op != events.OpDelete || len(out.Body) != 0 || !out.Origin.IsServer() {
		t.Fatalf("got %+v", out)
	}
	if s, _ := out.Subject(); s != "fs.tenant.admin.setting.s1" {
		t.Fatalf("subject %q", s)
	}
}

func TestDecode_Errors(t *testing.T) {
	good, err := events.Encode(sampleEnvelope(t))
	if err != nil {
		t.Fatal(err)
	}
	raw := func(m map[string]any) []byte { return mustBody(t, m) }
	base := map[string]any{"id": "e", "org": "u", "ch": "events", "kind": "event", "rid": "r", "op": "upsert",
		"v": 1, "ts": 1, "body": msgpack.RawMessage(mustBody(t, map[string]any{"a": 1}))}
	with := func(k string, v any) []byte {
		m := map[string]any{}
		for kk, vv := range base {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return raw(m)
	}
	withAll := func(set map[string]any) []byte {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range set {
			m[k] = v
		}
		return raw(m)
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, events.ErrMalformed},
		{"garbage", []byte{0xc1, 0xff, 0x00}, events.ErrMalformed},
		{"truncated", good[:len(good)/2], events.ErrMalformed},
		{"trailing", append(append([]byte{}, good...), 0x01), events.ErrMalformed},
		{"not a map", raw(map[string]any{"x": 1})[1:], events.ErrMalformed},
		{"future version", with("v", 99), events.ErrUnknownVersion},
		{"no version", with("v", nil), events.ErrMissingField},
		{"no id", with("id", nil), events.ErrMissingField},
		{"bad channel", with("ch", "gossip"), events.ErrInvalidField},
		{"newer version, other field types", withAll(map[string]any{"v": 2, "rid": 12, "op": []any{"x"}}), events.ErrUnknownVersion},
		{"negative version", with("v", -1), events.ErrInvalidField},
		{"huge version", with("v", int64(1)<<40), events.ErrInvalidField},
		{"newer version, corrupt", append(with("v", 2)[:3], 0xc1), events.ErrMalformed},
		{"bad kind", with("kind", "space ship"), events.ErrInvalidField},
		{"no kind", with("kind", nil), events.ErrMissingField},
		{"dotted record id", with("rid", "a.b"), events.ErrInvalidField},
		{"wildcard org", with("org", "*"), events.ErrInvalidField},
		{"bad op", with("op", "merge"), events.ErrInvalidField},
		{"upsert without body", with("body", nil), events.ErrMissingField},
		{"body not a map", with("body", msgpack.RawMessage{0x01}), events.ErrInvalidField},
		{"no timestamp", with("ts", nil), events.ErrMissingField},
		{"wrong type", with("rid", 12), events.ErrMalformed},
		{"oversized", make([]byte, events.MaxMessageSize+1), events.ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := events.Decode(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode: got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecode_AnyKind(t *testing.T) {
	m := map[string]any{"id": "e", "org": "u", "ch": "events", "kind": "inspection_round", "rid": "r", "op": "delete", "v": 1, "ts": 5}
	e, err := events.Decode(mustBody(t, m))
	if err != nil || e.Kind != "inspection_round" {
		t.Fatalf("a kind outside the catalogue must decode: %+v, %v", e, err)
	}
}

func TestDecodeUpTo(t *testing.T) {
	m := map[string]any{"id": "e", "org": "u", "ch": "events", "kind": "event", "rid": "r", "op": "delete", "v": 2, "ts": 5, "extra": 1}
	b := mustBody(t, m)
	var e events.Envelope
	if err := events.DecodeInto(b, &e); !errors.Is(err, events.ErrUnknownVersion) {
		t.Fatalf("this build must not read schema 2: %v", err)
	}
	if err := events.DecodeUpTo(b, &e, 2); err != nil || e.SchemaVersion != 2 || e.RecordID != "r" {
		t.Fatalf("a reader of schema 2: %+v, %v", e, err)
	}
	m["v"] = 1
	if err := events.DecodeUpTo(mustBody(t, m), &e, 0); err != nil {
		t.Fatalf("max 0 means this build's schema: %v", err)
	}
}

func TestDecode_SkipsUnknownKeys(t *testing.T) {
	m := map[string]any{"id": "e", "org": "u", "ch": "documents", "kind": "document", "rid": "r", "op": "delete",
		"v": 1, "ts": 5, "future_field": []any{1, "x"}}
	if _, err := events.Decode(mustBody(t, m)); err != nil {
		t.Fatalf("unknown key should be skipped: %v", err)
	}
}

func TestEncode_RejectsOversizedBody(t *testing.T) {
	e := sampleEnvelope(t)
	e.Body = mustBody(t, map[string]any{"blob": make([]byte, events.MaxBodySize)})
	if _, err := events.Encode(e); !errors.Is(err, events.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

// TestDecode_ClaimedLengthsDoNotGrowMemory: envelopes of a few bytes
// whose strings claim gigabytes (the input FuzzDecode found, kept in
// testdata/fuzz/FuzzDecode/004cbfff67be6470) cost each decode at most a
// few MiB, however many come in a row. A pooled decoder kept the buffer a
// failed read had grown and grew it again at the next one, until the
// fuzzer's worker ran out of memory.
func TestDecode_ClaimedLengthsDoNotGrowMemory(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // the pool keeps what it holds
	inputs := [][]byte{
		[]byte("\x88\xa3rid\xa10\xa2op\xc6\xc6\xc6\xc6\xc6\xc6\xc6\xc6v0\xa20000"), // bin32 of 3.3 GiB as "op"
		{0x81, 0xa2, 'i', 'd', 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'},                  // str32 of 4 GiB as "id"
	}
	for _, in := range inputs {
		for i := range 30 {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			if _, err := events.Decode(in); !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("Decode(%q) = %v, want ErrMalformed", in, err)
			}
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
				t.Fatalf("decode %d of %d bytes allocated %d MiB", i+1, len(in), n>>20)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := events.Encode(sampleEnvelope(f))
	f.Add(good)
	f.Add([]byte{0x80})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0xa4, 0x62, 0x6f, 0x64, 0x79, 0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := events.Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must be valid and re-encode to an equal envelope.
		again, err := events.Encode(e)
		if err != nil {
			t.Fatalf("decoded envelope does not re-encode: %v", err)
		}
		e2, err := events.Decode(again)
		if err != nil || e2.EventID != e.EventID || !bytes.Equal(e2.Body, e.Body) {
			t.Fatalf("re-decode differs: %v", err)
		}
	})
}

func BenchmarkDecodeInto(b *testing.B) {
	buf, _ := events.Encode(sampleEnvelope(b))
	var e events.Envelope
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if err := events.DecodeInto(buf, &e); err != nil {
			b.Fatal(err)
		}
	}
}
