package events_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
)

func marshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// nested returns a body whose maps nest depth levels deep (the body's own
// map is level 1).
func nested(tb testing.TB, depth int) []byte {
	var v any = map[string]any{}
	for i := 1; i < depth; i++ {
		v = map[string]any{"n": v}
	}
	return marshal(tb, v)
}

func TestValidateBody_Accepts(t *testing.T) {
	cases := map[string][]byte{
		"empty map": {0x80},
		"every plain type": marshal(t, map[string]any{
			"nil": nil, "t": true, "f": false, "small": 7, "neg": -3, "i8": int8(-100), "i16": int16(-30000),
			"i32": int32(-2e9), "i64": int64(math.MinInt64), "u8": uint8(200), "u16": uint16(60000), "u32": uint32(4e9),
			"u64": uint64(math.MaxUint64), "f32": float32(1.5), "f64": 2.25, "str": "text", "bin": []byte{0, 1, 2},
			"list": []any{1, "x", []any{}, map[string]any{"k": nil}}, "map": map[string]any{"deep": map[string]any{"er": 1}},
			"str8": strings.Repeat("a", 40), "str16": strings.Repeat("b", 300), "str32": strings.Repeat("c", 70000),
			"bin16": make([]byte, 300), "list16": make([]any, 20), "": "empty key",
		}),
		"map16":                  marshal(t, manyKeys(20)),
		"MaxBodyDepth levels":    nested(t, events.MaxBodyDepth),
		"arrays to MaxBodyDepth": marshal(t, map[string]any{"a": deepArray(events.MaxBodyDepth - 1)}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if err := events.ValidateBody(b); err != nil {
				t.Fatalf("ValidateBody: %v", err)
			}
		})
	}
}

func manyKeys(n int) map[string]any {
	m := map[string]any{}
	for i := 0; i < n; i++ {
		m[strings.Repeat("k", i+1)] = i
	}
	return m
}

func TestValidateBody_Refuses(t *testing.T) {
	good := marshal(t, map[string]any{"a": 1})
	cases := []struct {
		name string
		in   []byte
		want error
		path string // where the error must point
		says string // what the reason must mention
	}{
		{"empty", nil, events.ErrInvalidBody, "body", "empty"},
		{"not a map", marshal(t, []any{1}), events.ErrInvalidBody, "body", "array"},
		{"nil", []byte{0xc0}, events.ErrInvalidBody, "body", "nil"},
		{"integer key", marshal(t, map[int]string{1: "x"}), events.ErrInvalidBody, "body", "integer"},
		{"nested integer key", marshal(t, map[string]any{"items": []any{map[string]any{}, map[string]any{"x": map[int]any{7: 1}}}}),
			events.ErrInvalidBody, "body.items[1].x", "keys must be strings"},
		{"bool key", marshal(t, map[string]any{"m": map[bool]int{true: 1}}), events.ErrInvalidBody, "body.m", "bool"},
		{"binary key", []byte{0x81, 0xc4, 0x01, 'k', 0x01}, events.ErrInvalidBody, "body", "binary"},
		{"extension type", []byte{0x81, 0xa1, 'e', 0xd4, 0x05, 0x00}, events.ErrInvalidBody, "body.e", "extension type 5"},
		{"ext8", []byte{0x81, 0xa1, 'e', 0xc7, 0x01, 0x09, 0x00}, events.ErrInvalidBody, "body.e", "extension type 9"},
		{"timestamp", marshal(t, map[string]any{"at": time.Unix(1700000000, 0)}), events.ErrInvalidBody, "body.at", "timestamp"},
		{"NaN", marshal(t, map[string]any{"x": math.NaN()}), events.ErrInvalidBody, "body.x", "finite"},
		{"infinity float32", marshal(t, map[string]any{"l": []any{float32(math.Inf(1))}}), events.ErrInvalidBody, "body.l[0]", "finite"},
		{"too deep", nested(t, events.MaxBodyDepth+1), events.ErrInvalidBody, "body" + strings.Repeat(".n", events.MaxBodyDepth), "deeper"},
		{"too deep arrays", marshal(t, map[string]any{"a": deepArray(events.MaxBodyDepth)}), events.ErrInvalidBody,
			"body.a" + strings.Repeat("[0]", events.MaxBodyDepth-1), "deeper"},
		{"trailing bytes", append(append([]byte{}, good...), 0x01), events.ErrInvalidBody, "body", "after the map"},
		{"second map", append(append([]byte{}, good...), good...), events.ErrInvalidBody, "body", "after the map"},
		{"truncated", good[:len(good)-1], events.ErrInvalidBody, "body.a", "truncated"},
		{"map32 claiming 4G entries", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, events.ErrInvalidBody, "body", "truncated"},
		{"str32 claiming 4 GiB", []byte{0x81, 0xa1, 's', 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'}, events.ErrInvalidBody, "body.s", "truncated"},
		{"reserved code", []byte{0x81, 0xa1, 'r', 0xc1}, events.ErrInvalidBody, "body.r", "0xc1"},
		{"odd key quoted", marshal(t, map[string]any{"a b": map[int]int{1: 1}}), events.ErrInvalidBody, `body["a b"]`, "integer"},
		{"oversized", marshal(t, map[string]any{"blob": make([]byte, events.MaxBodySize)}), events.ErrTooLarge, "body", "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := events.ValidateBody(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ValidateBody: got %v, want %v", err, tc.want)
			}
			var be *events.BodyError
			if !errors.As(err, &be) {
				t.Fatalf("error %T is not a *BodyError", err)
			}
			if be.Path != tc.path || !strings.Contains(be.Reason, tc.says) {
				t.Fatalf("error at %q: %q, want at %q mentioning %q", be.Path, be.Reason, tc.path, tc.says)
			}
			if tc.want == events.ErrInvalidBody && !errors.Is(err, events.ErrInvalidField) {
				t.Fatalf("%v does not match ErrInvalidField", err)
			}
		})
	}
}

func deepArray(depth int) any {
	var v any = []any{}
	for i := 1; i < depth; i++ {
		v = []any{v}
	}
	return v
}

// TestDecode_PoisonBody: an envelope carrying a body that is a msgpack
// map only by its first byte is refused by Decode and Encode alike.
func TestDecode_PoisonBody(t *testing.T) {
	for name, body := range map[string][]byte{
		"integer keys":        marshal(t, map[int]any{1: "x"}),
		"nested integer keys": marshal(t, map[string]any{"m": map[int]any{1: "x"}}),
		"extension type":      {0x81, 0xa1, 'e', 0xd4, 0x05, 0x00},
		"timestamp":           marshal(t, map[string]any{"at": time.Now()}),
	} {
		t.Run(name, func(t *testing.T) {
			e := sampleEnvelope(t)
			e.Body = body
			if _, err := events.Encode(e); !errors.Is(err, events.ErrInvalidBody) {
				t.Fatalf("Encode: got %v, want ErrInvalidBody", err)
			}
			raw := envelopeBytes(t, body)
			if _, err := events.Decode(raw); !errors.Is(err, events.ErrInvalidBody) {
				t.Fatalf("Decode: got %v, want ErrInvalidBody", err)
			}
		})
	}
}

// envelopeBytes encodes a valid envelope carrying body as it is, the way
// an old build's writer did (events.Encode would refuse it now).
func envelopeBytes(tb testing.TB, body []byte) []byte {
	tb.Helper()
	return marshal(tb, map[string]any{"id": "e", "org": "u", "ch": "events", "kind": "event", "rid": "r", "op": "upsert",
		"v": events.SchemaVersion, "ts": 1, "body": msgpack.RawMessage(body)})
}

func FuzzValidateBody(f *testing.F) {
	f.Add(marshal(f, map[string]any{"title": "Inspect pump", "n": 3, "tags": []any{"a", 1.5}, "m": map[string]any{"x": nil}}))
	f.Add(marshal(f, map[int]any{1: "x"}))
	f.Add(marshal(f, map[string]any{"at": time.Unix(1, 0)}))
	f.Add(nested(f, events.MaxBodyDepth))
	f.Add([]byte{0x80})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0xa1, 'e', 0xd4, 0x05, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		err := events.ValidateBody(b)
		if err != nil {
			var be *events.BodyError
			if !errors.As(err, &be) || !(errors.Is(err, events.ErrInvalidBody) || errors.Is(err, events.ErrTooLarge)) {
				t.Fatalf("error %v (%T) is not a BodyError with a sentinel", err, err)
			}
			return
		}
		// What is accepted is what the device's read path can serve: it
		// decodes into a map and encodes as JSON; re-encoding it is valid.
		var m map[string]any
		if err := msgpack.Unmarshal(b, &m); err != nil {
			t.Fatalf("accepted body does not decode: %v", err)
		}
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("accepted body is not JSON: %v", err)
		}
		again := marshal(t, m)
		if err := events.ValidateBody(again); err != nil && len(again) <= events.MaxBodySize {
			t.Fatalf("re-encoded body %x refused: %v", again, err)
		}
	})
}

func BenchmarkValidateBody(b *testing.B) {
	body := marshal(b, map[string]any{"title": "Inspect pump", "n": 3, "tags": []any{"a", "b"}, "site": map[string]any{"id": 42, "lat": 1.5}})
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := events.ValidateBody(body); err != nil {
			b.Fatal(err)
		}
	}
}
