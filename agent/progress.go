package agent

import (
	"sync"

	"github.com/fieldsync/fieldsync/events"
)

// ChannelProgress is the download progress of one (unit, channel) in the
// running sync.
type ChannelProgress struct {
	Unit     string         `json:"org_unit"`
	Channel  events.Channel `json:"channel"`
	Received uint64         `json:"received"`
	// Expected is Received plus what the broker said remained; it is only
	// ever raised, so progress never goes backwards.
	Expected uint64 `json:"expected"`
	Done     bool   `json:"done"`
}

// progress tracks the running sync's per-(unit, channel) progress.
type progress struct {
	mu     sync.Mutex
	items  map[[2]string]*ChannelProgress
	order  [][2]string
	notify func() // told after each change (nil: nobody)
}

func newProgress(notify func()) *progress {
	if notify == nil {
		notify = func() {}
	}
	return &progress{items: map[[2]string]*ChannelProgress{}, notify: notify}
}

func (p *progress) item(unit string, ch events.Channel) *ChannelProgress {
	k := [2]string{unit, string(ch)}
	it, ok := p.items[k]
	if !ok {
		it = &ChannelProgress{Unit: unit, Channel: ch}
		p.items[k] = it
		p.order = append(p.order, k)
	}
	return it
}

// start registers (unit, ch) with the number of changes pending.
func (p *progress) start(unit string, ch events.Channel, pending uint64) {
	defer p.notify()
	p.mu.Lock()
	defer p.mu.Unlock()
	it := p.item(unit, ch)
	it.Expected = max(it.Expected, it.Received+pending)
}

// add records n more received changes with pending still to come.
func (p *progress) add(unit string, ch events.Channel, n int, pending uint64, done bool) {
	defer p.notify()
	p.mu.Lock()
	defer p.mu.Unlock()
	it := p.item(unit, ch)
	it.Received += uint64(n)
	it.Expected = max(it.Expected, it.Received+pending)
	it.Done = it.Done || done
	if it.Done {
		it.Expected = max(it.Expected, it.Received)
	}
}

func (p *progress) snapshot() []ChannelProgress {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ChannelProgress, 0, len(p.order))
	for _, k := range p.order {
		out = append(out, *p.items[k])
	}
	return out
}
