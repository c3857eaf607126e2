package publish

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/strictjson"
)

// MaxRequestSize is the largest JSON request the publish API reads, over
// NATS and HTTP alike: room for a body of [events.MaxBodySize] once
// msgpack-encoded, whose JSON form is usually larger.
const MaxRequestSize = 2 * events.MaxMessageSize

// decodeStrict decodes exactly one JSON value from r into v (see
// [strictjson.Decode]): numbers are kept as [json.Number], and with
// knownFields an object field v has no place for is an error.
func decodeStrict(r io.Reader, v any, knownFields bool) error {
	return strictjson.Decode(r, v, strictjson.Options{KnownFields: knownFields, UseNumber: true})
}

// decodeRequest decodes one JSON [Request] from r strictly (see
// [decodeStrict]; unknown fields are errors) and keeps integral numbers
// in its body as integers.
func decodeRequest(r io.Reader, req *Request) error {
	if err := decodeStrict(r, req, true); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Body = normalise(req.Body).(map[string]any)
	return nil
}

// DecodeBody parses exactly one JSON object as a record body, keeping
// integral numbers as integers (a plain json.Unmarshal would round large
// ones). Trailing data after the object is an error.
func DecodeBody(data []byte) (map[string]any, error) {
	var m map[string]any
	if err := decodeStrict(bytes.NewReader(data), &m, false); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("body: want a JSON object")
	}
	return normalise(m).(map[string]any), nil
}

// normalise turns json.Number into int64 where integral, float64 otherwise.
func normalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return x
		}
		for k, vv := range x {
			x[k] = normalise(vv)
		}
		return x
	case []any:
		for i, vv := range x {
			x[i] = normalise(vv)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		if math.IsInf(f, 0) {
			return x.String()
		}
		return f
	}
	return v
}
