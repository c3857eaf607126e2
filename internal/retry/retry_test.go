package retry_test

import (
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/internal/retry"
)

var policy = retry.Policy{Initial: time.Second, Max: time.Minute}

// interval is the un-jittered interval of failure n under policy.
func interval(n int) time.Duration {
	capped := time.Duration(float64(policy.Max) / (1 + retry.Jitter))
	iv := policy.Initial
	for i := 1; i < n && iv < capped; i++ {
		iv *= 2
	}
	return min(iv, capped)
}

func TestPolicy_New(t *testing.T) {
	b := policy.New()
	var seq []time.Duration
	for n := 1; n <= 12; n++ {
		d, iv := b.NextBackOff(), interval(n)
		lo, hi := time.Duration(float64(iv)*(1-retry.Jitter)), time.Duration(float64(iv)*(1+retry.Jitter))
		if d < lo || d > hi {
			t.Fatalf("failure %d: wait %v outside [%v, %v]", n, d, lo, hi)
		}
		if d > policy.Max {
			t.Fatalf("failure %d: wait %v above Max %v", n, d, policy.Max)
		}
		seq = append(seq, d)
	}
	// Growth: the lowest possible 4th wait is above the highest 1st.
	if seq[3] <= seq[0] {
		t.Fatalf("waits do not grow: %v", seq)
	}
	b.Reset()
	if d := b.NextBackOff(); d > time.Duration(float64(policy.Initial)*(1+retry.Jitter)) {
		t.Fatalf("after Reset the wait is %v, want about Initial %v", d, policy.Initial)
	}
}

// TestPolicy_New_Jittered: two backoffs of one policy (two agents, two
// ingest nodes) do not wait the same: no lock-step after an outage.
func TestPolicy_New_Jittered(t *testing.T) {
	a, b := policy.New(), policy.New()
	same := 0
	for range 10 {
		if a.NextBackOff() == b.NextBackOff() {
			same++
		}
	}
	if same == 10 {
		t.Fatal("two backoffs drew identical schedules")
	}
	// Many draws at the cap spread over the window rather than piling up.
	lo, hi := policy.Max, time.Duration(0)
	for range 200 {
		d := policy.Delay(30)
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi > policy.Max || hi-lo < policy.Max/4 {
		t.Fatalf("waits at the cap within [%v, %v], want spread below Max %v", lo, hi, policy.Max)
	}
}

func TestPolicy_Delay(t *testing.T) {
	for n := uint64(0); n <= 100; n++ {
		iv := interval(int(max(n, 1)))
		d := policy.Delay(n)
		if lo, hi := time.Duration(float64(iv)*(1-retry.Jitter)), time.Duration(float64(iv)*(1+retry.Jitter)); d < lo || d > hi {
			t.Fatalf("Delay(%d) = %v outside [%v, %v]", n, d, lo, hi)
		}
	}
	if d := policy.Delay(1 << 62); d > policy.Max {
		t.Fatalf("Delay of a huge count = %v, above Max", d)
	}
}

func TestPolicy_WithDefaults(t *testing.T) {
	got := retry.Policy{Max: 10 * time.Millisecond}.WithDefaults(retry.Policy{Initial: time.Second, Max: time.Minute})
	if got.Initial != time.Second || got.Max != time.Second {
		t.Fatalf("WithDefaults = %+v, want Initial 1s and Max raised to it", got)
	}
	if got := (retry.Policy{}).WithDefaults(policy); got != policy {
		t.Fatalf("WithDefaults of zero = %+v, want %+v", got, policy)
	}
}
