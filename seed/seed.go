// Package seed generates synthetic server-side changes for demos, tests and
// benchmarks: realistic-looking records of every kind, with bodies of a
// chosen size, as [events.Envelope] values.
package seed

import (
	"fmt"
	"math/rand"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
)

// Spec says how many records of each channel to generate for one org unit.
type Spec struct {
	Org       string
	Events    int
	Admin     int
	Documents int
	// BodySize is the approximate encoded body size in bytes (default 300).
	BodySize int
	// Seed makes the output reproducible (default 1).
	Seed int64
}

// Total is the number of records the spec generates.
func (s Spec) Total() int { return s.Events + s.Admin + s.Documents }

// Generator yields the envelopes of a [Spec], interleaving channels in the
// spec's proportions the way a real org's history would.
type Generator struct {
	spec  Spec
	rng   *rand.Rand
	n     [3]int
	now   time.Time
	pad   string
	count int
}

// New returns a generator for spec.
func New(spec Spec) (*Generator, error) {
	if err := events.ValidToken(spec.Org); err != nil {
		return nil, fmt.Errorf("seed: org: %w", err)
	}
	if spec.Events < 0 || spec.Admin < 0 || spec.Documents < 0 {
		return nil, fmt.Errorf("seed: negative counts")
	}
	if spec.BodySize == 0 {
		spec.BodySize = 300
	}
	if spec.Seed == 0 {
		spec.Seed = 1
	}
	return &Generator{spec: spec, rng: rand.New(rand.NewSource(spec.Seed)), now: time.Now().UTC(),
		pad: strings.Repeat("lorem ipsum dolor sit amet ", spec.BodySize/27+1)}, nil
}

// Next returns the next envelope, or false when the spec is exhausted.
func (g *Generator) Next() (*events.Envelope, bool) {
	want := [3]int{g.spec.Events, g.spec.Admin, g.spec.Documents}
	left := want[0] + want[1] + want[2] - g.n[0] - g.n[1] - g.n[2]
	if left <= 0 {
		return nil, false
	}
	pick := g.rng.Intn(left)
	for i := range want {
		if r := want[i] - g.n[i]; pick < r {
			g.n[i]++
			return g.envelope(i, g.n[i]), true
		} else {
			pick -= r
		}
	}
	return nil, false
}

var chans = [3]events.Channel{events.ChannelEvents, events.ChannelAdmin, events.ChannelDocuments}

func (g *Generator) envelope(ch, i int) *events.Envelope {
	c := chans[ch]
	kinds := events.Kinds(c)
	kind := kinds[i%len(kinds)]
	g.count++
	id := fmt.Sprintf("%s-%s-%07d", g.spec.Org, kind, i)
	body := g.body(c, kind, id)
	b, _ := msgpack.Marshal(body)
	return &events.Envelope{EventID: fmt.Sprintf("seed-%s-%d-%d-%d", g.spec.Org, g.spec.Seed, ch, i), OrgUnit: g.spec.Org,
		Channel: c, Kind: kind, RecordID: id, Op: events.OpUpsert, Body: b, SchemaVersion: events.SchemaVersion, Timestamp: g.now}
}

func (g *Generator) body(c events.Channel, kind, id string) map[string]any {
	m := map[string]any{"title": fmt.Sprintf("%s %s", strings.ReplaceAll(kind, "_", " "), id), "org_unit": g.spec.Org}
	switch c {
	case events.ChannelEvents:
		m["status"] = []string{"open", "in_progress", "closed"}[g.rng.Intn(3)]
		m["due_at"] = g.now.AddDate(0, 0, g.rng.Intn(120)-60).Format(time.DateOnly)
		m["location"] = fmt.Sprintf("site-%02d", g.rng.Intn(40))
		m["assignee"] = fmt.Sprintf("user%03d", g.rng.Intn(200))
	case events.ChannelDocuments:
		m["file_name"] = id + ".pdf"
		m["size"] = 10_000 + g.rng.Intn(5_000_000)
		m["content_type"] = "application/pdf"
	default:
		m["value"] = fmt.Sprintf("v%d", g.rng.Intn(1000))
	}
	enc, _ := msgpack.Marshal(m)
	if pad := g.spec.BodySize - len(enc) - 8; pad > 0 {
		m["notes"] = g.pad[:min(pad, len(g.pad))]
	}
	return m
}
