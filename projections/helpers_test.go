package projections_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/projections/projectionstest"
	"github.com/vmihailenco/msgpack/v5"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// A testdata/*.jsonl file holds one stream message per line, in stream order:
//
//	{"seq": N, "subject": "...", "envelope": {"id": ..., "org": ..., "ch": ..., "kind": ...,
//	   "rid": ..., "op": ..., "v": 1, "ts": <unix nanos>, "body": {...}, "dev": ..., "mut": ...}}
//	{"seq": N, "subject": "...", "raw_hex": "..."}
//
// Envelope lines are encoded by hand (see encodeEnvelope), never with
// events.Encode, so a file may hold envelopes events.Encode would refuse.
// Every key of "envelope" is written as given, unknown keys included; keys
// that are absent are not written. raw_hex lines carry the bytes verbatim.
// Sequences are stream sequences and must increase through the file. Seqs
// are shared by all channels of a unit (as in a JetStream unit stream), so
// the seqs of one (unit, channel) have gaps.
type line struct {
	Seq      uint64          `json:"seq"`
	Subject  string          `json:"subject"`
	Envelope json.RawMessage `json:"envelope,omitempty"`
	RawHex   *string         `json:"raw_hex,omitempty"`
}

// loadMessages reads testdata/name and returns its messages in file order.
func loadMessages(tb testing.TB, name string) []projections.Message {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []projections.Message
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), events.MaxMessageSize*4)
	for n := 1; sc.Scan(); n++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var l line
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			tb.Fatalf("%s:%d: %v", name, n, err)
		}
		if l.Seq == 0 || l.Subject == "" {
			tb.Fatalf("%s:%d: seq and subject are required", name, n)
		}
		if len(out) > 0 && l.Seq <= out[len(out)-1].Seq {
			tb.Fatalf("%s:%d: seq %d does not increase", name, n, l.Seq)
		}
		m := projections.Message{Seq: l.Seq, Subject: l.Subject}
		switch {
		case l.RawHex != nil && l.Envelope == nil:
			if m.Data, err = hex.DecodeString(*l.RawHex); err != nil {
				tb.Fatalf("%s:%d: raw_hex: %v", name, n, err)
			}
		case l.RawHex == nil && l.Envelope != nil:
			m.Data = encodeEnvelopeJSON(tb, l.Envelope)
		default:
			tb.Fatalf("%s:%d: want exactly one of envelope and raw_hex", name, n)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(out) == 0 {
		tb.Fatalf("%s: no messages", name)
	}
	return out
}

// encodeEnvelopeJSON encodes the JSON object of an "envelope" line.
func encodeEnvelopeJSON(tb testing.TB, raw json.RawMessage) []byte {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		tb.Fatalf("envelope: %v", err)
	}
	fields := make(map[string]any, len(obj))
	for k, v := range obj {
		fields[k] = fromJSON(v)
	}
	return encodeEnvelope(tb, fields)
}

// fromJSON turns json.Numbers into int64 (or float64 when not integral), so
// "v" and "ts" are msgpack integers and bodies keep their integers.
func fromJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, err := x.Float64()
		if err != nil {
			panic(fmt.Sprintf("bad number %q", x))
		}
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = fromJSON(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = fromJSON(e)
		}
		return x
	}
	return v
}

// encodeEnvelope builds the msgpack envelope map by hand. A "body" value is
// msgpack-encoded on its own and embedded as a msgpack.RawMessage, as the
// wire format does. Keys are sorted so the bytes are reproducible.
func encodeEnvelope(tb testing.TB, fields map[string]any) []byte {
	tb.Helper()
	m := make(map[string]any, len(fields))
	for k, v := range fields {
		m[k] = v
	}
	if body, ok := m["body"]; ok {
		if _, isRaw := body.(msgpack.RawMessage); !isRaw {
			m["body"] = msgpack.RawMessage(marshalSorted(tb, body))
		}
	}
	return marshalSorted(tb, m)
}

func marshalSorted(tb testing.TB, v any) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(v); err != nil {
		tb.Fatalf("msgpack: %v", err)
	}
	return buf.Bytes()
}

// streamOf returns the (unit, channel) stream a message is read from.
//
// A parsable subject gives its own unit and channel. For an unparsable one
// the stream is taken from the raw tokens when the subject has the shape
// fs.org.<unit>.<channel>.… or fs.tenant.<channel>.…, even if those tokens
// are invalid: a consumer filtering fs.org.<unit>.<channel>.> is what would
// receive a message whose kind or id token is bad, and a bad unit token (say
// "no*rth") gets a pseudo-stream of its own so it cannot move a real unit's
// checkpoint. Anything else goes to the stream {"invalid", "invalid"}.
func streamOf(subject string) projections.Stream {
	if a, err := events.ParseSubject(subject); err == nil {
		return projections.Stream{Unit: a.OrgUnit, Channel: a.Channel}
	}
	t := strings.Split(subject, ".")
	switch {
	case len(t) >= 4 && t[0] == "fs" && t[1] == "org":
		return projections.Stream{Unit: t[2], Channel: events.Channel(t[3])}
	case len(t) >= 3 && t[0] == "fs" && t[1] == "tenant":
		return projections.Stream{Unit: "", Channel: events.Channel(t[2])}
	}
	return projections.Stream{Unit: "invalid", Channel: "invalid"}
}

// groupByStream splits msgs into per-stream runs, keeping their order, and
// returns the streams sorted.
func groupByStream(msgs []projections.Message) (map[projections.Stream][]projections.Message, []projections.Stream) {
	g := map[projections.Stream][]projections.Message{}
	var keys []projections.Stream
	for _, m := range msgs {
		st := streamOf(m.Subject)
		if _, ok := g[st]; !ok {
			keys = append(keys, st)
		}
		g[st] = append(g[st], m)
	}
	sortStreams(keys)
	return g, keys
}

func sortStreams(s []projections.Stream) {
	sort.Slice(s, func(i, j int) bool {
		if s[i].Unit != s[j].Unit {
			return s[i].Unit < s[j].Unit
		}
		return s[i].Channel < s[j].Channel
	})
}

// chunk splits msgs into consecutive batches of at most n messages.
func chunk(msgs []projections.Message, n int) [][]projections.Message {
	var out [][]projections.Message
	for len(msgs) > n {
		out = append(out, msgs[:n:n])
		msgs = msgs[n:]
	}
	return append(out, msgs)
}

// run folds and applies every stream of msgs in batches of batchSize
// (all messages at once when batchSize <= 0), stream after stream, and
// returns the state and every reject folded, in seq order.
func run(tb testing.TB, msgs []projections.Message, batchSize int) (*projectionstest.State, []projections.Reject) {
	tb.Helper()
	return runWith(tb, projections.Reader{}, msgs, batchSize)
}

// runWith is run with reader r.
func runWith(tb testing.TB, r projections.Reader, msgs []projections.Message, batchSize int) (*projectionstest.State, []projections.Reject) {
	tb.Helper()
	g, keys := groupByStream(msgs)
	s := projectionstest.NewState()
	var rejects []projections.Reject
	for _, st := range keys {
		size := batchSize
		if size <= 0 {
			size = len(g[st])
		}
		for _, part := range chunk(g[st], size) {
			b := r.Fold(part)
			checkBatch(tb, part, b)
			rejects = append(rejects, b.Rejects...)
			s.Apply(st, b)
		}
	}
	sort.Slice(rejects, func(i, j int) bool { return rejects[i].Seq < rejects[j].Seq })
	return s, rejects
}

// checkBatch asserts what Fold promises about one batch.
func checkBatch(tb testing.TB, msgs []projections.Message, b projections.Batch) {
	tb.Helper()
	var max uint64
	for _, m := range msgs {
		if m.Seq > max {
			max = m.Seq
		}
	}
	if b.LastSeq != max {
		tb.Errorf("Fold: LastSeq = %d, want highest seq %d", b.LastSeq, max)
	}
	if len(b.Changes)+len(b.Rejects)+len(b.Parked) != len(msgs) {
		tb.Errorf("Fold: %d changes + %d rejects + %d parked for %d messages", len(b.Changes), len(b.Rejects), len(b.Parked), len(msgs))
	}
	for _, p := range b.Parked {
		if !projections.Parkable(p.Err) || p.Code != projections.Code(p.Err) || len(p.Data) == 0 {
			tb.Errorf("Fold: parked %d: code %q for error %v, %d bytes", p.Seq, p.Code, p.Err, len(p.Data))
		}
	}
	for i := 1; i < len(b.Changes); i++ {
		if b.Changes[i].Seq <= b.Changes[i-1].Seq {
			tb.Errorf("Fold: changes out of order: seq %d after %d", b.Changes[i].Seq, b.Changes[i-1].Seq)
		}
	}
	for _, r := range b.Rejects {
		if r.Err == nil || r.Code == "" || r.Code != projections.Code(r.Err) {
			tb.Errorf("Fold: reject %d: code %q for error %v", r.Seq, r.Code, r.Err)
		}
	}
}

// Golden rendering of a state.
type golden struct {
	Records []goldenRecord `json:"records"`
	Streams []goldenStream `json:"streams"`
	Rejects []goldenReject `json:"rejects"`
}

type goldenRecord struct {
	Unit      string          `json:"unit"`
	Channel   string          `json:"channel"`
	Kind      string          `json:"kind"`
	ID        string          `json:"id"`
	Version   uint64          `json:"version"`
	EventID   string          `json:"event_id"`
	UpdatedAt int64           `json:"updated_at_ms"`
	Body      json.RawMessage `json:"body"`
}

type goldenStream struct {
	Unit       string         `json:"unit"`
	Channel    string         `json:"channel"`
	Checkpoint uint64         `json:"checkpoint"`
	Rejected   int            `json:"rejected"`
	Parked     []goldenParked `json:"parked,omitempty"`
}

type goldenParked struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	Code    string `json:"code"`
	Version int    `json:"version"`
}

type goldenReject struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	Code    string `json:"code"`
}

// render returns the deterministic JSON rendering of s (records, then
// streams sorted by unit and channel) and of rejects (in the given order).
func render(tb testing.TB, s *projectionstest.State, rejects []projections.Reject) []byte {
	tb.Helper()
	g := golden{Records: []goldenRecord{}, Streams: []goldenStream{}, Rejects: []goldenReject{}}
	for _, r := range s.Sorted() {
		var body any
		if err := msgpack.Unmarshal(r.Body, &body); err != nil {
			tb.Fatalf("record %v: body: %v", r.Addr, err)
		}
		bj, err := json.Marshal(body)
		if err != nil {
			tb.Fatalf("record %v: body to JSON: %v", r.Addr, err)
		}
		g.Records = append(g.Records, goldenRecord{Unit: r.Addr.OrgUnit, Channel: string(r.Addr.Channel),
			Kind: r.Addr.Kind, ID: r.Addr.RecordID, Version: r.Version, EventID: r.EventID,
			UpdatedAt: r.UpdatedAt, Body: bj})
	}
	var streams []projections.Stream
	seen := map[projections.Stream]bool{}
	for st := range s.Checkpoints {
		seen[st] = true
		streams = append(streams, st)
	}
	for _, m := range []map[projections.Stream]int{s.Rejected, parkedCounts(s)} {
		for st := range m {
			if !seen[st] {
				seen[st] = true
				streams = append(streams, st)
			}
		}
	}
	sortStreams(streams)
	for _, st := range streams {
		gs := goldenStream{Unit: st.Unit, Channel: string(st.Channel), Checkpoint: s.Checkpoints[st], Rejected: s.Rejected[st]}
		for _, p := range s.Parked[st] {
			gs.Parked = append(gs.Parked, goldenParked{Seq: p.Seq, Subject: p.Subject, Code: p.Code, Version: p.Version})
		}
		g.Streams = append(g.Streams, gs)
	}
	for _, r := range rejects {
		g.Rejects = append(g.Rejects, goldenReject{Seq: r.Seq, Subject: r.Subject, Code: r.Code})
	}
	out, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	return append(out, '\n')
}

func parkedCounts(s *projectionstest.State) map[projections.Stream]int {
	out := map[projections.Stream]int{}
	for st, ps := range s.Parked {
		if len(ps) > 0 {
			out[st] = len(ps)
		}
	}
	return out
}

// renderState renders s alone, for comparing states.
func renderState(tb testing.TB, s *projectionstest.State) string {
	tb.Helper()
	return string(render(tb, s, nil))
}
