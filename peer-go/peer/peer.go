package peer

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"
)

// Peer is a running device: identity, N relay sockets, the redirect policy.
type Peer struct {
	cfg      Config
	ids      *Identities
	out      io.Writer
	outMu    sync.Mutex
	resolver Resolver

	mu           sync.Mutex
	relayURL     string
	allowlist    []string
	lastRedirect time.Time
	sockets      []*relaySocket

	// dead-relay failover: one ask in flight, at most one per Timing.FailoverCheck
	failoverBusy  bool
	nextFailover  time.Time // no check before: the interval after one, or a Retry-After after a failed one
	failoverAsks  int
	failoverTimer *time.Timer // the re-check due when the interval after the last check ends
	// relay checks in a row the API did not answer: each waits twice as long as the one before
	failoverUnanswered int

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares a peer; log lines go to out (they never contain tokens).
func New(cfg Config, out io.Writer) *Peer {
	p := &Peer{cfg: cfg, out: out, resolver: net.DefaultResolver}
	p.ids = NewIdentities(&p.cfg, nil, p.log)
	return p
}

func (p *Peer) log(line string) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	fmt.Fprintln(p.out, line)
}

func (p *Peer) verbose(line string) {
	if p.cfg.Verbose {
		p.log(line)
	}
}

// DeviceID is the registered device ("" before Start).
func (p *Peer) DeviceID() string {
	if id := p.ids.Current(); id != nil {
		return id.DeviceID
	}
	return ""
}

func (p *Peer) relay() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayURL
}

// OpenSockets counts sockets connected to the relay right now.
func (p *Peer) OpenSockets() int {
	p.mu.Lock()
	sockets := p.sockets
	p.mu.Unlock()
	n := 0
	for _, s := range sockets {
		if s.open() {
			n++
		}
	}
	return n
}

// Start registers (or resumes) and opens the sockets. It returns a *RejectedError when the API
// refused us or the state file cannot be written: retrying will not help.
func (p *Peer) Start(ctx context.Context) error {
	id, resumed, err := p.acquireWithRetry(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.relayURL = id.Relay
	if p.cfg.RelayURL != "" {
		p.relayURL = p.cfg.RelayURL
	}
	p.allowlist = p.cfg.RelayAllowlist
	if len(p.allowlist) == 0 {
		p.allowlist = []string{RelayDomain(id.Relay)}
	}
	relay := p.relayURL
	p.mu.Unlock()
	p.log(fmt.Sprintf("[REGISTERED] device=%s relay=%s sockets=%d", id.DeviceID, relay, p.cfg.Connections))
	if id.IPType != "" || resumed {
		p.verbose(fmt.Sprintf("[IDENTITY] ipType=%s resumed=%t", id.IPType, resumed))
	}
	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.mu.Lock()
	for i := 1; i <= p.cfg.Connections; i++ {
		p.sockets = append(p.sockets, newRelaySocket(p, i))
	}
	for _, s := range p.sockets {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			s.run(runCtx)
		}()
	}
	p.mu.Unlock()
	return nil
}

// acquireWithRetry waits out a briefly absent API (deploy, 429) rather than crash-looping a fleet.
func (p *Peer) acquireWithRetry(ctx context.Context) (*Identity, bool, error) {
	for attempt := 0; ; attempt++ {
		id, resumed, err := p.ids.Acquire(ctx)
		if err == nil {
			return id, resumed, nil
		}
		var rejected *RejectedError
		if errors.As(err, &rejected) {
			return nil, false, err
		}
		delay := time.Second << min(attempt, 6)
		delay = min(delay, time.Minute)
		var retry *retryableError
		if errors.As(err, &retry) && retry.retryAfter > delay {
			delay = retry.retryAfter
		}
		p.log(fmt.Sprintf("[API] %s; retrying in %d s", err, int(delay.Round(time.Second)/time.Second)))
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// renew is called by a socket after 4001/4002; true once a token newer than staleJWT is held.
func (p *Peer) renew(ctx context.Context, staleJWT string) bool {
	renewed, err := p.ids.Renew(ctx, staleJWT)
	if err != nil {
		if renewed {
			p.log(fmt.Sprintf("[REFRESH_FAILED] %s", err))
		}
		return false
	}
	if renewed {
		p.log(fmt.Sprintf("[REFRESHED] device=%s token renewed for all sockets", p.DeviceID()))
	}
	return true
}

// connectFailed is a socket's report that its last `failures` connects to relay in a row never
// reached `connected`. From Timing.FailoverAfterFailures on, and unless the relay is pinned, the
// peer asks the API (the refresh it uses for renewals) which relay it would assign now and moves
// there when that is another one: the API skips regions whose relay stopped reporting, so a device
// whose relay died lands on a live one instead of retrying the dead one forever. One check in
// flight, one per Timing.FailoverCheck (counted from the start of the last one); a check the API
// could not answer is repeated after its Retry-After (else 2 s) instead.
func (p *Peer) connectFailed(ctx context.Context, relay string, failures int) {
	t := p.cfg.Timing
	if p.cfg.RelayURL != "" || t.FailoverAfterFailures <= 0 || failures < t.FailoverAfterFailures {
		return
	}
	p.mu.Lock()
	if p.failoverBusy || !sameRelay(relay, p.relayURL) {
		p.mu.Unlock()
		return
	}
	if wait := time.Until(p.nextFailover); wait > 0 {
		// Too soon after a check that still named this relay (a killed relay stays listed alive
		// for a few seconds), or after one the API could not answer: check again the moment the
		// wait ends, not at some socket's next attempt, which with a doubled backoff can be a
		// minute later.
		p.armRecheckLocked(ctx, wait)
		p.mu.Unlock()
		return
	}
	p.failoverBusy = true
	p.nextFailover = time.Now().Add(t.FailoverCheck)
	p.failoverAsks++
	p.mu.Unlock()

	advice, err := p.ids.RelayAdvice(ctx)

	p.mu.Lock()
	p.failoverBusy = false
	if err != nil {
		if ctx.Err() == nil && !isRejected(err) {
			// No answer (network, 408, 429, 5xx): the interval is for answers that named a live
			// relay, so ask again sooner: a fifteenth of it (2 s by default), doubling while the API
			// stays away, never before its Retry-After, plus up to half again so a fleet spreads
			// out; at most the interval.
			wait := max(retryAfter(err), t.FailoverCheck/15<<min(p.failoverUnanswered, 10))
			p.failoverUnanswered++
			wait = min(t.FailoverCheck, wait+time.Duration(rand.Int64N(int64(wait/2)+1)))
			p.nextFailover = time.Now().Add(wait)
			p.armRecheckLocked(ctx, wait)
		}
		p.mu.Unlock()
		if ctx.Err() == nil {
			p.log(fmt.Sprintf("[FAILOVER_CHECK_FAILED] %s", err))
		}
		return
	}
	p.failoverUnanswered = 0
	if !sameRelay(relay, p.relayURL) {
		// A redirect moved us while the call was out: that move stands.
		p.mu.Unlock()
		return
	}
	u, perr := url.Parse(advice)
	if advice == "" || sameRelay(advice, relay) {
		p.mu.Unlock()
		p.verbose(fmt.Sprintf("[FAILOVER_CHECK] relay=%s is still the assigned relay; backing off", relay))
		return
	}
	if !wsURLRE.MatchString(advice) || perr != nil || u.Host == "" {
		p.mu.Unlock()
		p.verbose(fmt.Sprintf("[FAILOVER_CHECK] relay=%s: the assigned relay %q is not a ws:// or wss:// URL; backing off", relay, advice))
		return
	}
	// Unlike a redirect it does not start the redirect cooldown: a relay_redirect from the new
	// relay (the operator's region setting) is still followed.
	p.relayURL = advice
	sockets := p.sockets
	p.mu.Unlock()
	p.moveSockets(advice, fmt.Sprintf("[FAILOVER] relay=%s", advice), sockets)
}

// armRecheckLocked schedules recheckFailover after wait unless one is due already; p.mu is held.
func (p *Peer) armRecheckLocked(ctx context.Context, wait time.Duration) {
	if p.failoverTimer == nil {
		p.failoverTimer = time.AfterFunc(wait, func() { p.recheckFailover(ctx) })
	}
}

// recheckFailover runs the check the interval held back, if a socket still fails to reach the relay.
func (p *Peer) recheckFailover(ctx context.Context) {
	p.mu.Lock()
	p.failoverTimer = nil
	relay, sockets := p.relayURL, p.sockets
	p.mu.Unlock()
	worst := 0
	for _, s := range sockets {
		worst = max(worst, s.failing(relay))
	}
	if ctx.Err() == nil && worst > 0 {
		p.connectFailed(ctx, relay, worst)
	}
}

// FailoverAsks counts failover checks started (each one refresh call, not token renewals).
func (p *Peer) FailoverAsks() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failoverAsks
}

func (p *Peer) onRedirect(target, reason any) {
	p.mu.Lock()
	follow, why := DecideRedirect(target, RedirectContext{
		Pinned:         p.cfg.RelayURL != "",
		Allowlist:      p.allowlist,
		CurrentRelay:   p.relayURL,
		LastRedirectAt: p.lastRedirect,
		Now:            time.Now(),
		Cooldown:       p.cfg.Timing.RedirectCooldown,
	})
	if !follow {
		p.mu.Unlock()
		p.verbose(fmt.Sprintf("[REDIRECT_IGNORED] target=%v why=%s", target, why))
		return
	}
	relay := target.(string)
	p.lastRedirect = time.Now()
	p.relayURL = relay
	sockets := p.sockets
	p.mu.Unlock()
	if reason == nil {
		reason = "unspecified"
	}
	p.moveSockets(relay, fmt.Sprintf("[REDIRECT] relay=%s reason=%v", relay, reason), sockets)
}

// moveSockets saves the new relay so a restart goes straight there, logs, and has every socket
// reconnect to it (an open one closes with 4100).
func (p *Peer) moveSockets(relay, logLine string, sockets []*relaySocket) {
	p.ids.SetRelay(relay)
	p.log(logLine)
	for _, s := range sockets {
		select {
		case s.move <- struct{}{}:
		default:
		}
	}
}

// Stop closes every socket (1000) and its tunnels and waits for them; no reconnects afterwards.
func (p *Peer) Stop() {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	p.log(fmt.Sprintf("[STOPPED] device=%s", p.DeviceID()))
}

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
