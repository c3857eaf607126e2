package events

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// MaxBodyDepth is how deeply maps and arrays may nest in a record body;
// the body's own map is depth 1.
const MaxBodyDepth = 32

// ErrInvalidBody: a record body is not a plain msgpack map (see
// [ValidateBody]). It wraps [ErrInvalidField], so code sorting errors by
// field sentinel treats a bad body as an invalid field.
var ErrInvalidBody = fmt.Errorf("%w: record body", ErrInvalidField)

// BodyError says where in a record body, and why, [ValidateBody] refused it.
type BodyError struct {
	// Path locates the offending value: "body" for the body itself, then
	// ".key" for a map entry and "[i]" for an array element, e.g.
	// "body.items[2].tags".
	Path   string
	Reason string
	// Err is [ErrInvalidBody], or [ErrTooLarge] for a body over [MaxBodySize].
	Err error
}

func (e *BodyError) Error() string { return fmt.Sprintf("%v: %s: %s", e.Err, e.Path, e.Reason) }

func (e *BodyError) Unwrap() error { return e.Err }

// ValidateBody checks that b is exactly one record body: a msgpack map
// with string keys whose values are plain msgpack types only — nil, bool,
// integers, finite floats, strings, binary, arrays and maps with string
// keys — nested at most [MaxBodyDepth] deep, at most [MaxBodySize] bytes,
// with nothing after it.
//
// Extension types are refused, the msgpack timestamp (-1) included: a body
// is what the tablet app reads as JSON, which has no such types (send a
// time as an RFC 3339 string or as Unix milliseconds). NaN and infinities
// are refused for the same reason.
//
// Errors are a *[BodyError] wrapping [ErrInvalidBody] or [ErrTooLarge].
// ValidateBody is pure and allocates only for the error.
func ValidateBody(b []byte) error {
	switch {
	case len(b) > MaxBodySize:
		return &BodyError{Path: "body", Reason: fmt.Sprintf("%d bytes, limit %d", len(b), MaxBodySize), Err: ErrTooLarge}
	case len(b) == 0:
		return bodyErr("body", "empty")
	case !isMapCode(b[0]):
		return bodyErr("body", "not a msgpack map (starts with "+describe(b[0])+")")
	}
	w := bodyWalker{b: b}
	if err := w.value(0); err != nil {
		err.Path = "body" + err.Path
		return err
	}
	if w.pos != len(b) {
		return bodyErr("body", fmt.Sprintf("%d bytes after the map", len(b)-w.pos))
	}
	return nil
}

func bodyErr(path, reason string) *BodyError {
	return &BodyError{Path: path, Reason: reason, Err: ErrInvalidBody}
}

// bodyWalker reads one msgpack value after another from b. Lengths are
// checked against what is left before anything is skipped, so hostile
// headers (a map claiming 2³² entries) cost nothing.
type bodyWalker struct {
	b   []byte
	pos int
}

// value checks the value at w.pos and moves past it. Errors carry the path
// below this value; callers prepend their own part.
func (w *bodyWalker) value(depth int) *BodyError {
	if w.pos >= len(w.b) {
		return bodyErr("", "truncated")
	}
	c := w.b[w.pos]
	w.pos++
	switch {
	case msgpcode.IsFixedNum(c), c == msgpcode.Nil, c == msgpcode.False, c == msgpcode.True:
		return nil
	case c == msgpcode.Float, c == msgpcode.Double:
		return w.float(c == msgpcode.Double)
	case c >= msgpcode.Uint8 && c <= msgpcode.Int64: // 0xcc..0xd3, 1 to 8 bytes
		return w.skip(1 << ((c - msgpcode.Uint8) % 4))
	case msgpcode.IsString(c), msgpcode.IsBin(c):
		n, err := w.length(c)
		if err != nil {
			return err
		}
		return w.skip(n)
	case isMapCode(c), isArrayCode(c):
		if depth+1 > MaxBodyDepth {
			return bodyErr("", fmt.Sprintf("nested deeper than %d levels", MaxBodyDepth))
		}
		n, err := w.length(c)
		if err != nil {
			return err
		}
		if isMapCode(c) {
			return w.mapEntries(n, depth+1)
		}
		return w.arrayItems(n, depth+1)
	case msgpcode.IsExt(c):
		return bodyErr("", w.extension(c))
	}
	return bodyErr("", "invalid msgpack code 0xc1")
}

func (w *bodyWalker) mapEntries(n, depth int) *BodyError {
	for i := 0; i < n; i++ {
		start := w.pos
		if w.pos >= len(w.b) {
			return bodyErr("", "truncated")
		}
		if c := w.b[w.pos]; !msgpcode.IsString(c) {
			return bodyErr("", fmt.Sprintf("map key %d is %s, keys must be strings", i, describe(c)))
		}
		if err := w.value(depth); err != nil { // a string: cannot nest
			return err
		}
		key := w.b[start:w.pos]
		if err := w.value(depth); err != nil {
			err.Path = keyPath(key) + err.Path
			return err
		}
	}
	return nil
}

func (w *bodyWalker) arrayItems(n, depth int) *BodyError {
	for i := 0; i < n; i++ {
		if err := w.value(depth); err != nil {
			err.Path = "[" + strconv.Itoa(i) + "]" + err.Path
			return err
		}
	}
	return nil
}

// length reads the element or byte count of a str, bin, array or map
// header whose code c was just read.
func (w *bodyWalker) length(c byte) (int, *BodyError) {
	switch {
	case msgpcode.IsFixedString(c):
		return int(c & msgpcode.FixedStrMask), nil
	case msgpcode.IsFixedArray(c):
		return int(c & msgpcode.FixedArrayMask), nil
	case msgpcode.IsFixedMap(c):
		return int(c & msgpcode.FixedMapMask), nil
	}
	size := 4 // str32, bin32, array32, map32
	switch c {
	case msgpcode.Str8, msgpcode.Bin8:
		size = 1
	case msgpcode.Str16, msgpcode.Bin16, msgpcode.Array16, msgpcode.Map16:
		size = 2
	}
	if len(w.b)-w.pos < size {
		return 0, bodyErr("", "truncated")
	}
	p := w.b[w.pos : w.pos+size]
	w.pos += size
	var n uint64
	for _, x := range p {
		n = n<<8 | uint64(x)
	}
	// Every element takes at least one byte: a count beyond what is left
	// is truncated input, whatever it claims.
	if n > uint64(len(w.b)-w.pos) {
		return 0, bodyErr("", fmt.Sprintf("truncated (header claims %d, %d bytes left)", n, len(w.b)-w.pos))
	}
	return int(n), nil
}

func (w *bodyWalker) skip(n int) *BodyError {
	if len(w.b)-w.pos < n {
		return bodyErr("", "truncated")
	}
	w.pos += n
	return nil
}

func (w *bodyWalker) float(double bool) *BodyError {
	start := w.pos
	if !double {
		if err := w.skip(4); err != nil {
			return err
		}
		f := math.Float32frombits(binary.BigEndian.Uint32(w.b[start:]))
		return finite(float64(f))
	}
	if err := w.skip(8); err != nil {
		return err
	}
	return finite(math.Float64frombits(binary.BigEndian.Uint64(w.b[start:])))
}

func finite(f float64) *BodyError {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return bodyErr("", fmt.Sprintf("float %v: numbers must be finite", f))
	}
	return nil
}

// extension names the extension type whose code c was just read.
func (w *bodyWalker) extension(c byte) string {
	at := w.pos // fixext: the type byte follows the code
	switch c {
	case msgpcode.Ext8:
		at++
	case msgpcode.Ext16:
		at += 2
	case msgpcode.Ext32:
		at += 4
	}
	if at >= len(w.b) {
		return "extension type (truncated): extension types are not allowed"
	}
	id := int8(w.b[at])
	if id == -1 {
		return "msgpack timestamp (extension type -1): send times as strings or integers"
	}
	return fmt.Sprintf("extension type %d: extension types are not allowed", id)
}

// keyPath renders the encoded string key k as a path part: ".name", or
// [".."] quoted when it is not a plain word, shortened when long.
func keyPath(k []byte) string {
	w := bodyWalker{b: k, pos: 1}
	n, _ := w.length(k[0])
	s := string(k[w.pos : w.pos+n])
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return "[" + strconv.Quote(s) + "]"
		}
	}
	if s == "" {
		return `[""]`
	}
	return "." + s
}

// describe names the msgpack type a value starting with code c has.
func describe(c byte) string {
	switch {
	case msgpcode.IsFixedNum(c), c >= msgpcode.Uint8 && c <= msgpcode.Int64:
		return "an integer"
	case c == msgpcode.Nil:
		return "nil"
	case c == msgpcode.False, c == msgpcode.True:
		return "a bool"
	case c == msgpcode.Float, c == msgpcode.Double:
		return "a float"
	case msgpcode.IsString(c):
		return "a string"
	case msgpcode.IsBin(c):
		return "binary"
	case isArrayCode(c):
		return "an array"
	case isMapCode(c):
		return "a map"
	case msgpcode.IsExt(c):
		return "an extension type"
	}
	return "invalid code 0xc1"
}

func isMapCode(c byte) bool {
	return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
}

func isArrayCode(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}
