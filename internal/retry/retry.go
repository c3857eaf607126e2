// Package retry spaces fieldsync's retries with jittered exponential
// backoff (github.com/cenkalti/backoff/v5), so that a fleet of agents, or
// the uploads of a broker outage, do not all come back at the same moment.
package retry

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Jitter is how far a wait is drawn from its interval: uniformly within
// ±50%.
const Jitter = 0.5

// Policy is a jittered exponential backoff: the interval starts at Initial
// and doubles after each failure in a row, and each wait is drawn within
// ±[Jitter] of it. Max bounds every wait: the interval stops growing at
// Max/(1+Jitter), so waits near the cap fall between Max/3 and Max.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
}

// WithDefaults fills unset fields from def.
func (p Policy) WithDefaults(def Policy) Policy {
	if p.Initial <= 0 {
		p.Initial = def.Initial
	}
	if p.Max <= 0 {
		p.Max = def.Max
	}
	p.Max = max(p.Max, p.Initial)
	return p
}

// New returns a backoff following p: call NextBackOff after each failure,
// Reset after a success. It is not safe for concurrent use.
func (p Policy) New() *backoff.ExponentialBackOff {
	capped := time.Duration(float64(p.Max) / (1 + Jitter))
	b := &backoff.ExponentialBackOff{InitialInterval: min(p.Initial, capped), RandomizationFactor: Jitter,
		Multiplier: 2, MaxInterval: capped}
	b.Reset()
	return b
}

// Delay returns the wait after the n-th failure in a row (n ≥ 1; 0 counts
// as 1), for retries that carry their own count, such as a message's
// delivery count.
func (p Policy) Delay(n uint64) time.Duration {
	b := p.New()
	// The interval stops growing after log2(Max/Initial) steps; 64 doublings
	// exceed any duration.
	var d time.Duration
	for i := uint64(0); i < max(min(n, 64), 1); i++ {
		d = b.NextBackOff()
	}
	return d
}
