package peer

import (
	"math/rand/v2"
	"time"
)

// BackoffPolicy is the reconnect timing of PROTOCOL.md section 2.
type BackoffPolicy struct {
	Base   time.Duration // first delay, doubled per failed attempt (5 s)
	Max    time.Duration // ceiling of the doubled part (120 s)
	Jitter time.Duration // least jitter on top, so a fleet does not reconnect in lockstep (2 s)
	Stable time.Duration // a socket up this long starts again from Base (1 min)
}

// DefaultBackoff is the production policy.
var DefaultBackoff = BackoffPolicy{Base: 5 * time.Second, Max: 120 * time.Second, Jitter: 2 * time.Second, Stable: time.Minute}

// BackoffDelay is the delay before reconnect attempt `attempt` (0-based); random is in [0, 1).
// The first attempt waits Base plus 0..Jitter; later ones add uniform jitter below
// max(Jitter, delay/2), so a fleet that lost one relay spreads its retries more the longer the
// outage lasts instead of arriving at the survivors in 2-second waves.
func BackoffDelay(p BackoffPolicy, attempt int, random float64) time.Duration {
	doubled := p.Base << min(attempt, 30)
	if doubled > p.Max || doubled <= 0 {
		doubled = p.Max
	}
	spread := p.Jitter
	if attempt > 0 {
		spread = max(p.Jitter, doubled/2)
	}
	return doubled + time.Duration(random*float64(spread))
}

// Backoff is one socket's reconnect state: failed attempts since the last stable connection.
type Backoff struct {
	Policy  BackoffPolicy
	attempt int
	random  func() float64
}

// NewBackoff uses math/rand for jitter.
func NewBackoff(p BackoffPolicy) *Backoff { return &Backoff{Policy: p, random: rand.Float64} }

// Next is called when a socket closes after being open for `up` (0 if it never opened).
func (b *Backoff) Next(up time.Duration) time.Duration {
	if up >= b.Policy.Stable {
		b.attempt = 0
	}
	d := BackoffDelay(b.Policy, b.attempt, b.random())
	b.attempt++
	return d
}
