package events

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxMessageSize is the largest encoded envelope [Decode] accepts.
const MaxMessageSize = MaxBodySize + 4<<10

// Wire keys of the envelope map. Short keys keep every message small; unknown
// keys are skipped when decoding so newer writers can add optional fields.
const (
	keyID       = "id"
	keyOrg      = "org"
	keyChannel  = "ch"
	keyKind     = "kind"
	keyRecord   = "rid"
	keyOp       = "op"
	keyBody     = "body"
	keyVersion  = "v"
	keyDevice   = "dev"
	keyMutation = "mut"
	keyBase     = "base"
	keyAfter    = "after"
	keyTime     = "ts"
)

var encPool = sync.Pool{New: func() any {
	buf := new(bytes.Buffer)
	return &encoder{buf: buf, enc: msgpack.NewEncoder(buf)}
}}

type encoder struct {
	buf *bytes.Buffer
	enc *msgpack.Encoder
}

// Encode validates e and returns its msgpack encoding.
func Encode(e *Envelope) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	x := encPool.Get().(*encoder)
	defer encPool.Put(x)
	x.buf.Reset()
	if err := writeEnvelope(x.enc, e); err != nil {
		return nil, fmt.Errorf("events: encode: %w", err)
	}
	return bytes.Clone(x.buf.Bytes()), nil
}

// field is one key of the envelope map and how its value is written.
type field struct {
	key   string
	value func(*msgpack.Encoder) error
}

func str(v string) func(*msgpack.Encoder) error {
	return func(w *msgpack.Encoder) error { return w.EncodeString(v) }
}

// envelopeFields lists the keys e carries, in wire order: optional keys
// only when set, so the map length is the list's length.
func envelopeFields(e *Envelope) []field {
	fs := []field{
		{keyID, str(e.EventID)}, {keyChannel, str(string(e.Channel))}, {keyKind, str(e.Kind)},
		{keyRecord, str(e.RecordID)}, {keyOp, str(string(e.Op))},
		{keyVersion, func(w *msgpack.Encoder) error { return w.EncodeInt(int64(e.SchemaVersion)) }},
		{keyTime, func(w *msgpack.Encoder) error { return w.EncodeInt(e.Timestamp.UnixNano()) }},
	}
	if e.OrgUnit != "" {
		fs = append(fs, field{keyOrg, str(e.OrgUnit)})
	}
	if e.Origin.DeviceID != "" {
		fs = append(fs, field{keyDevice, str(e.Origin.DeviceID)}, field{keyMutation, str(e.Origin.MutationID)},
			field{keyBase, func(w *msgpack.Encoder) error { return w.EncodeUint(e.Origin.BaseVersion) }})
		if e.Origin.After != "" {
			fs = append(fs, field{keyAfter, str(e.Origin.After)})
		}
	}
	if len(e.Body) > 0 {
		fs = append(fs, field{keyBody, func(w *msgpack.Encoder) error { return w.Encode(msgpack.RawMessage(e.Body)) }})
	}
	return fs
}

func writeEnvelope(w *msgpack.Encoder, e *Envelope) error {
	fs := envelopeFields(e)
	if err := w.EncodeMapLen(len(fs)); err != nil {
		return err
	}
	for _, f := range fs {
		if err := w.EncodeString(f.key); err != nil {
			return err
		}
		if err := f.value(w); err != nil {
			return err
		}
	}
	return nil
}

type decoder struct {
	r   *bytes.Reader
	dec *msgpack.Decoder
}

var decPool = sync.Pool{New: func() any {
	r := bytes.NewReader(nil)
	return &decoder{r: r, dec: msgpack.NewDecoder(r)}
}}

// Decode parses and validates one encoded envelope. It never panics: bad
// bytes give an error wrapping [ErrMalformed] or [ErrTooLarge], a schema
// newer than [SchemaVersion] [ErrUnknownVersion] (whatever else the newer
// envelope holds), absent or bad fields [ErrMissingField] or
// [ErrInvalidField], a body that is not a plain map ([ValidateBody])
// [ErrInvalidBody].
func Decode(b []byte) (*Envelope, error) {
	e := new(Envelope)
	if err := DecodeInto(b, e); err != nil {
		return nil, err
	}
	return e, nil
}

// DecodeInto is [Decode] into a caller-owned envelope, for hot loops.
func DecodeInto(b []byte, e *Envelope) error { return DecodeUpTo(b, e, SchemaVersion) }

// DecodeUpTo is [DecodeInto] for a reader of envelope schemas up to
// maxVersion (0: [SchemaVersion]). An envelope of a newer schema fails
// with [ErrUnknownVersion] even when the rest of it does not decode as
// this build expects, so the caller can keep it for a newer reader rather
// than discard it as corrupt. Fields are read by key and unknown keys are
// skipped, so a reader set above [SchemaVersion] reads a newer envelope's
// fields that this build knows.
func DecodeUpTo(b []byte, e *Envelope, maxVersion int) error {
	if maxVersion <= 0 {
		maxVersion = SchemaVersion
	}
	err := decode(b, e, maxVersion)
	if err == nil || errors.Is(err, ErrUnknownVersion) || errors.Is(err, ErrTooLarge) {
		return err
	}
	if v, ok := PeekVersion(b); ok && v > maxVersion {
		return fieldErr("v", ErrUnknownVersion, fmt.Sprintf("schema version %d, this reader reads up to %d (%v)", v, maxVersion, err))
	}
	return err
}

func decode(b []byte, e *Envelope, maxVersion int) (err error) {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%w: message is %d bytes, limit %d", ErrTooLarge, len(b), MaxMessageSize)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder panic: %v", ErrMalformed, r)
		}
	}()
	x := decPool.Get().(*decoder)
	x.r.Reset(b)
	x.dec.Reset(x.r)
	*e = Envelope{}
	if err := readEnvelope(x.dec, e); err != nil {
		// Not pooled again: a read that failed may have grown the msgpack
		// decoder's buffer towards a length the bytes only claimed (a str32
		// or bin32 of 4 GiB in a 20-byte upload), and the decoder keeps that
		// buffer and grows it further at the next such read.
		return err
	}
	trailing := x.r.Len()
	decPool.Put(x) // what was read fits in b: the buffer is at most about len(b)
	if trailing != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, trailing)
	}
	return e.validate(maxVersion)
}

// PeekVersion returns the schema version ("v") of the encoded envelope b
// without decoding anything else: every other key is skipped, whatever it
// holds. ok is false if b is not an envelope map with a plausible version.
func PeekVersion(b []byte) (v int, ok bool) {
	defer func() {
		if recover() != nil {
			v, ok = 0, false
		}
	}()
	d := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := d.DecodeMapLen()
	if err != nil || n < 0 || n > 64 {
		return 0, false
	}
	for i := 0; i < n; i++ {
		key, err := d.DecodeString()
		if err != nil {
			return 0, false
		}
		if key != keyVersion {
			if d.Skip() != nil {
				return 0, false
			}
			continue
		}
		ver, err := d.DecodeInt64()
		if err != nil || ver < 0 || ver > maxSchemaVersion {
			return 0, false
		}
		return int(ver), true
	}
	return 0, false
}

func readEnvelope(d *msgpack.Decoder, e *Envelope) error {
	n, err := d.DecodeMapLen()
	if err != nil || n < 0 {
		return fmt.Errorf("%w: not a msgpack map: %v", ErrMalformed, err)
	}
	if n > 64 {
		return fmt.Errorf("%w: map of %d keys", ErrMalformed, n)
	}
	for i := 0; i < n; i++ {
		key, err := d.DecodeString()
		if err != nil {
			return malformed("key", err)
		}
		if err := readField(d, e, key); err != nil {
			return err
		}
	}
	return nil
}

func readField(d *msgpack.Decoder, e *Envelope, key string) error {
	str := func(dst *string) error {
		s, err := d.DecodeString()
		if err != nil {
			return malformed(key, err)
		}
		*dst = s
		return nil
	}
	switch key {
	case keyID:
		return str(&e.EventID)
	case keyOrg:
		return str(&e.OrgUnit)
	case keyChannel:
		return str((*string)(&e.Channel))
	case keyKind:
		return str(&e.Kind)
	case keyRecord:
		return str(&e.RecordID)
	case keyOp:
		return str((*string)(&e.Op))
	case keyDevice:
		return str(&e.Origin.DeviceID)
	case keyMutation:
		return str(&e.Origin.MutationID)
	case keyAfter:
		return str(&e.Origin.After)
	case keyBase:
		v, err := d.DecodeUint64()
		if err != nil {
			return malformed(key, err)
		}
		e.Origin.BaseVersion = v
	case keyVersion:
		v, err := d.DecodeInt64()
		if err != nil {
			return malformed(key, err)
		}
		if v < 0 || v > maxSchemaVersion {
			return fieldErr("v", ErrInvalidField, fmt.Sprintf("schema version %d is not a schema version", v))
		}
		e.SchemaVersion = int(v)
	case keyTime:
		ns, err := d.DecodeInt64()
		if err != nil {
			return malformed(key, err)
		}
		e.Timestamp = time.Unix(0, ns).UTC()
	case keyBody:
		raw, err := d.DecodeRaw()
		if err != nil {
			return malformed(key, err)
		}
		e.Body = raw
	default:
		if err := d.Skip(); err != nil {
			return malformed(key, err)
		}
	}
	return nil
}

func malformed(field string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fieldErr(field, ErrMalformed, "truncated")
	}
	return fieldErr(field, ErrMalformed, err.Error())
}
