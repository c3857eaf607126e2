package projections_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/vmihailenco/msgpack/v5"
)

const testTS = int64(1700000000123456789)

// baseEnv is a valid upsert of fs.org.north.events.event.e1.
func baseEnv() map[string]any {
	return map[string]any{
		"id": "ev-1", "org": "north", "ch": "events", "kind": "event", "rid": "e1",
		"op": "upsert", "v": int64(1), "ts": testTS, "body": map[string]any{"title": "Inspect pump", "n": int64(3)},
	}
}

// env encodes baseEnv with set applied and the keys in drop removed.
func env(tb testing.TB, set map[string]any, drop ...string) []byte {
	tb.Helper()
	m := baseEnv()
	for k, v := range set {
		m[k] = v
	}
	for _, k := range drop {
		delete(m, k)
	}
	return encodeEnvelope(tb, m)
}

const okSubject = "fs.org.north.events.event.e1"

func TestFromMessage_Errors(t *testing.T) {
	valid := env(t, nil)
	if _, err := projections.FromMessage(projections.Message{Subject: okSubject, Seq: 1, Data: valid}); err != nil {
		t.Fatalf("base envelope rejected: %v", err)
	}
	tenantSetting := map[string]any{"ch": "admin", "kind": "setting", "rid": "s1"}
	arrayBody, err := msgpack.Marshal([]any{"a", 1})
	if err != nil {
		t.Fatal(err)
	}
	nonStringKey, err := msgpack.Marshal(map[int]string{1: "x"})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		subject string
		data    []byte
		want    error
		code    string
	}{
		// Subject errors come first, whatever the bytes hold.
		{"wildcard in unit", "fs.org.no*rth.events.event.e1", valid, events.ErrBadSubject, "bad_subject"},
		{"wildcard in record id", "fs.org.north.events.event.e*1", valid, events.ErrBadSubject, "bad_subject"},
		{"dotted record id", "fs.org.north.events.event.e1.x", valid, events.ErrBadSubject, "bad_subject"},
		{"too few tokens", "fs.org.north.events.event", valid, events.ErrBadSubject, "bad_subject"},
		{"empty subject", "", valid, events.ErrBadSubject, "bad_subject"},
		{"not fieldsync", "orders.north.events.event.e1", valid, events.ErrBadSubject, "bad_subject"},
		{"upload subject", "fs.up.tab-1.north.events.event.e1", valid, events.ErrBadSubject, "bad_subject"},
		{"tenant non-admin", "fs.tenant.events.event.e1", env(t, nil, "org"), events.ErrBadSubject, "bad_subject"},
		{"unknown channel", "fs.org.north.chat.event.e1", valid, events.ErrBadSubject, "bad_subject"},
		{"bad kind token in subject", "fs.org.north.events.wid*get.e1", env(t, map[string]any{"kind": "wid*get"}), events.ErrBadSubject, "bad_subject"},
		{"kind token with a leading dash", "fs.org.north.events.-event.e1", valid, events.ErrBadSubject, "bad_subject"},
		{"bad subject and corrupt bytes", "fs.org.no rth.events.event.e1", []byte{0xc1}, events.ErrBadSubject, "bad_subject"},

		{"other unit", "fs.org.south.events.event.e1", valid, events.ErrSubjectMismatch, "subject_mismatch"},
		{"other record", "fs.org.north.events.event.e2", valid, events.ErrSubjectMismatch, "subject_mismatch"},
		{"other kind", "fs.org.north.events.action.e1", valid, events.ErrSubjectMismatch, "subject_mismatch"},
		{"org envelope on tenant subject", "fs.tenant.admin.setting.s1", env(t, tenantSetting), events.ErrSubjectMismatch, "subject_mismatch"},
		{"tenant envelope on org subject", "fs.org.north.admin.setting.s1", env(t, tenantSetting, "org"), events.ErrSubjectMismatch, "subject_mismatch"},

		{"version 2", okSubject, env(t, map[string]any{"v": int64(2)}), events.ErrUnknownVersion, "unknown_version"},
		{"version 7, fields of other types", okSubject, env(t, map[string]any{"v": int64(7), "rid": int64(1), "op": []any{"x"}}), events.ErrUnknownVersion, "unknown_version"},
		{"negative version", okSubject, env(t, map[string]any{"v": int64(-1)}), events.ErrInvalidField, "invalid_field"},
		{"huge version", okSubject, env(t, map[string]any{"v": int64(1) << 40}), events.ErrInvalidField, "invalid_field"},
		{"version 2 with unknown kind, no body", okSubject, env(t, map[string]any{"v": int64(2), "kind": "widget"}, "body"), events.ErrUnknownVersion, "unknown_version"},

		{"no bytes", okSubject, nil, events.ErrMalformed, "malformed"},
		{"never-used byte", okSubject, []byte{0xc1}, events.ErrMalformed, "malformed"},
		{"msgpack nil", okSubject, []byte{0xc0}, events.ErrMalformed, "malformed"},
		{"huge map header", okSubject, []byte{0xde, 0xad, 0xbe, 0xef}, events.ErrMalformed, "malformed"},
		{"truncated", okSubject, valid[:len(valid)-1], events.ErrMalformed, "malformed"},
		{"trailing bytes", okSubject, append(bytes.Clone(valid), 0x01), events.ErrMalformed, "malformed"},
		{"array, not map", okSubject, arrayBody, events.ErrMalformed, "malformed"},
		{"non-string key", okSubject, nonStringKey, events.ErrMalformed, "malformed"},
		{"version as string", okSubject, env(t, map[string]any{"v": "1"}), events.ErrMalformed, "malformed"},
		{"id as integer", okSubject, env(t, map[string]any{"id": int64(7)}), events.ErrMalformed, "malformed"},
		{"timestamp as string", okSubject, env(t, map[string]any{"ts": "2024-01-01"}), events.ErrMalformed, "malformed"},

		{"other kind in envelope", okSubject, env(t, map[string]any{"kind": "widget"}), events.ErrSubjectMismatch, "subject_mismatch"},
		{"kind of another channel", okSubject, env(t, map[string]any{"kind": "document"}), events.ErrSubjectMismatch, "subject_mismatch"},
		{"event kind on admin", "fs.tenant.admin.setting.s1", env(t, map[string]any{"ch": "admin", "rid": "s1"}, "org"), events.ErrSubjectMismatch, "subject_mismatch"},
		{"bad kind in envelope", okSubject, env(t, map[string]any{"kind": "a.b"}), events.ErrInvalidField, "invalid_field"},

		// The other sentinels, for completeness.
		{"no version", okSubject, env(t, nil, "v"), events.ErrMissingField, "missing_field"},
		{"no timestamp", okSubject, env(t, nil, "ts"), events.ErrMissingField, "missing_field"},
		{"no event id", okSubject, env(t, nil, "id"), events.ErrMissingField, "missing_field"},
		{"upsert without body", okSubject, env(t, nil, "body"), events.ErrMissingField, "missing_field"},
		{"dotted record id in envelope", okSubject, env(t, map[string]any{"rid": "e1.x"}), events.ErrInvalidField, "invalid_field"},
		{"bad unit in envelope", okSubject, env(t, map[string]any{"org": "no*rth"}), events.ErrInvalidField, "invalid_field"},
		{"unknown op", okSubject, env(t, map[string]any{"op": "merge"}), events.ErrInvalidField, "invalid_field"},
		{"body not a map", okSubject, env(t, map[string]any{"body": []any{"a"}}), events.ErrInvalidField, "invalid_field"},
		{"device without mutation", okSubject, env(t, map[string]any{"dev": "tab-1"}), events.ErrInvalidField, "invalid_field"},
		{"body too large", okSubject, env(t, map[string]any{"body": map[string]any{"x": strings.Repeat("a", events.MaxBodySize)}}), events.ErrTooLarge, "too_large"},
		{"message too large", okSubject, make([]byte, events.MaxMessageSize+1), events.ErrTooLarge, "too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := projections.Message{Subject: tc.subject, Seq: 42, Data: tc.data}
			c, err := projections.FromMessage(m)
			if !errors.Is(err, tc.want) {
				t.Fatalf("FromMessage: err = %v, want %v", err, tc.want)
			}
			if got := projections.Code(err); got != tc.code {
				t.Errorf("Code(%v) = %q, want %q", err, got, tc.code)
			}
			if !reflect.DeepEqual(c, projections.Change{}) {
				t.Errorf("FromMessage returned a change with its error: %+v", c)
			}
			b := projections.Fold([]projections.Message{m})
			if len(b.Changes) != 0 || len(b.Rejects)+len(b.Parked) != 1 || b.LastSeq != 42 {
				t.Fatalf("Fold: %d changes, %d rejects, %d parked, LastSeq %d", len(b.Changes), len(b.Rejects), len(b.Parked), b.LastSeq)
			}
			// Only a newer schema is parked: everything else is bad for good.
			if park := tc.want == events.ErrUnknownVersion; park != (len(b.Parked) == 1) || park != projections.Parkable(err) {
				t.Fatalf("Fold: parked %d, Parkable %v, want parked only for a newer schema", len(b.Parked), projections.Parkable(err))
			}
			if len(b.Parked) == 1 {
				p := b.Parked[0]
				if p.Seq != 42 || p.Subject != tc.subject || p.Code != tc.code || !bytes.Equal(p.Data, tc.data) || p.Version < 2 {
					t.Errorf("Fold parked = %+v, want seq 42, code %q, the bytes and the version", p, tc.code)
				}
				return
			}
			r := b.Rejects[0]
			if r.Seq != 42 || r.Subject != tc.subject || r.Code != tc.code || !errors.Is(r.Err, tc.want) {
				t.Errorf("Fold reject = %+v, want seq 42, code %q", r, tc.code)
			}
		})
	}
}

func TestFromMessage_OK(t *testing.T) {
	body := marshalSorted(t, map[string]any{"title": "Inspect pump", "n": int64(3)})
	t.Run("device upsert", func(t *testing.T) {
		data := env(t, map[string]any{"dev": "tab-1", "mut": "m-7", "x-new": []any{1, 2}})
		c, err := projections.FromMessage(projections.Message{Subject: okSubject, Seq: 9, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		want := projections.Change{Seq: 9, Addr: addr("north", events.ChannelEvents, "event", "e1"), EventID: "ev-1",
			Body: body, OriginID: "tab-1", UpdatedAt: testTS / 1e6}
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("got  %+v\nwant %+v", c, want)
		}
		// The change must not alias the message buffer, which a consumer reuses.
		for i := range data {
			data[i] = 0
		}
		if !bytes.Equal(c.Body, body) {
			t.Errorf("body changed with the message buffer: %x", c.Body)
		}
	})
	t.Run("tenant delete carrying a body", func(t *testing.T) {
		data := env(t, map[string]any{"ch": "admin", "kind": "setting", "rid": "s1", "op": "delete"}, "org")
		c, err := projections.FromMessage(projections.Message{Subject: "fs.tenant.admin.setting.s1", Seq: 3, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		want := projections.Change{Seq: 3, Addr: addr("", events.ChannelAdmin, "setting", "s1"), EventID: "ev-1",
			Deleted: true, UpdatedAt: testTS / 1e6}
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("got  %+v\nwant %+v", c, want)
		}
	})
	t.Run("agrees with events.Encode", func(t *testing.T) {
		e := &events.Envelope{EventID: "ev-1", OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event",
			RecordID: "e1", Op: events.OpUpsert, Body: body, SchemaVersion: 1, Timestamp: time.Unix(0, testTS)}
		enc, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		a, err := projections.FromMessage(projections.Message{Subject: okSubject, Seq: 1, Data: enc})
		if err != nil {
			t.Fatal(err)
		}
		b, err := projections.FromMessage(projections.Message{Subject: okSubject, Seq: 1, Data: env(t, nil)})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("hand-built envelope decodes differently from events.Encode:\n%+v\n%+v", b, a)
		}
	})
}

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{events.ErrBadSubject, "bad_subject"},
		{events.ErrSubjectMismatch, "subject_mismatch"},
		{events.ErrUnknownVersion, "unknown_version"},
		{events.ErrTooLarge, "too_large"},
		{events.ErrUnknownKind, "unknown_kind"},
		{events.ErrMissingField, "missing_field"},
		{events.ErrInvalidField, "invalid_field"},
		{events.ErrMalformed, "malformed"},
		{fmt.Errorf("wrapped: %w", events.ErrSubjectMismatch), "subject_mismatch"},
		{fmt.Errorf("twice: %w", fmt.Errorf("once: %w", events.ErrMalformed)), "malformed"},
		{&events.FieldError{Field: "kind", Reason: "x", Err: events.ErrUnknownKind}, "unknown_kind"},
		{fmt.Errorf("ctx: %w", &events.FieldError{Field: "v", Reason: "x", Err: events.ErrUnknownVersion}), "unknown_version"},
		{errors.New("events: malformed envelope"), "error"}, // same text, not the sentinel
		{errors.New("boom"), "error"},
	} {
		if got := projections.Code(tc.err); got != tc.want {
			t.Errorf("Code(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
