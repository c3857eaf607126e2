// Package strictjson decodes exactly one JSON value from a request: the
// one strict decoder of fieldsync's HTTP and NATS APIs (the publish API and
// the agent's local API), so both refuse trailing data the same way.
package strictjson

import (
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailing: a JSON value is followed by more than white space (a second
// object, garbage).
var ErrTrailing = errors.New("trailing data after the JSON value (send exactly one object)")

// Options tune [Decode].
type Options struct {
	// KnownFields makes an object field v has no place for an error.
	KnownFields bool
	// UseNumber keeps numbers as [json.Number].
	UseNumber bool
}

// Decode decodes exactly one JSON value from r into v: nothing but white
// space may follow it ([ErrTrailing]). Read errors (such as an
// *http.MaxBytesError) are returned as they are.
func Decode(r io.Reader, v any, o Options) error {
	dec := json.NewDecoder(r)
	if o.KnownFields {
		dec.DisallowUnknownFields()
	}
	if o.UseNumber {
		dec.UseNumber()
	}
	if err := dec.Decode(v); err != nil {
		return err
	}
	_, err := dec.Token()
	var syntax *json.SyntaxError
	switch {
	case err == io.EOF:
		return nil
	case err == nil, errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTrailing
	}
	return err
}
