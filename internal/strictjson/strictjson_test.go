package strictjson_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/internal/strictjson"
)

func TestDecode(t *testing.T) {
	type req struct {
		A int `json:"a"`
	}
	cases := []struct {
		in      string
		known   bool
		wantErr error // nil: accepted; errAny: some error
	}{
		{`{"a":1}`, true, nil},
		{"{\"a\":1}\n  \t", true, nil},
		{`{"a":1}{"a":2}`, true, strictjson.ErrTrailing},
		{`{"a":1} x`, true, strictjson.ErrTrailing},
		{`{"a":1}]`, true, strictjson.ErrTrailing},
		{`{"a":1,"b":2}`, true, errAny},
		{`{"a":1,"b":2}`, false, nil},
		{`{"a":`, true, errAny},
	}
	for _, c := range cases {
		var v req
		err := strictjson.Decode(strings.NewReader(c.in), &v, strictjson.Options{KnownFields: c.known})
		switch {
		case c.wantErr == nil && err != nil:
			t.Errorf("Decode(%q) = %v, want accepted", c.in, err)
		case c.wantErr == errAny && err == nil:
			t.Errorf("Decode(%q) accepted, want an error", c.in)
		case c.wantErr != nil && c.wantErr != errAny && !errors.Is(err, c.wantErr):
			t.Errorf("Decode(%q) = %v, want %v", c.in, err, c.wantErr)
		}
	}
}

var errAny = errors.New("any error")
