package peer

import (
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerproxy/peerproxy/peer-go/wire"
)

// Dead-relay failover against the stand-in API and relays of relay_test.go (small fakes on
// loopback: the real API and relays are exercised by test/go-peer.test.ts).

func wsURL(s *httptest.Server) string { return "ws" + strings.TrimPrefix(s.URL, "http") }

// startFailoverPeer is startTestPeer with extra flags (-relay=... pins the relay).
func startFailoverPeer(t *testing.T, n *fakeNetwork, connections int, extra ...string) (*Peer, *syncBuffer) {
	return startTunedPeer(t, n, func(cfg *Config) {
		cfg.Connections = connections
		cfg.Timing.Backoff = BackoffPolicy{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 5 * time.Millisecond, Stable: time.Minute}
	}, extra...)
}

// twoRelays is a fake network whose relay A hands out jwt-1, and a relay B to fail over to.
func twoRelays(t *testing.T) (*fakeNetwork, *httptest.Server) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1")
	relayB := httptest.NewServer(n.relayHandler)
	t.Cleanup(relayB.Close)
	return n, relayB
}

// killRelay takes relay A down for good: its port refuses connections and the peer's open
// sockets drop without a close frame, as after a SIGKILL.
func killRelay(n *fakeNetwork) {
	n.relay.Listener.Close()
	n.mu.Lock()
	for _, c := range n.conns {
		_ = c.UnderlyingConn().Close()
	}
	n.conns = nil
	n.mu.Unlock()
}

func TestTwoFailedConnectsAskTheAPIOnceAndMoveToTheRelayItAdvises(t *testing.T) {
	n, relayB := twoRelays(t)
	p, out := startFailoverPeer(t, n, 2)
	relayA := p.relay()
	<-n.acceptedConn
	<-n.acceptedConn
	n.liveJWT.Store("jwt-2") // the token the failover refresh hands out
	n.relayAdvice.Store(wsURL(relayB))
	killRelay(n)

	for range 2 {
		select {
		case <-n.acceptedConn:
		case <-time.After(5 * time.Second):
			t.Fatalf("sockets did not reach relay B:\n%s", out.String())
		}
	}
	if got := n.refreshes.Load(); got != 1 {
		t.Fatalf("refresh calls %d, want 1\n%s", got, out.String())
	}
	if p.relay() != wsURL(relayB) || p.FailoverAsks() != 1 {
		t.Fatalf("relay %s (was %s), asks %d", p.relay(), relayA, p.FailoverAsks())
	}
	if strings.Count(out.String(), "[FAILOVER] relay="+wsURL(relayB)) != 1 {
		t.Fatalf("no single [FAILOVER] line:\n%s", out.String())
	}
	state := ReadState(p.cfg.StateFile)
	if state == nil || state.Relay != wsURL(relayB) || state.RefreshToken != "rt-2" {
		t.Fatalf("state file %+v", state)
	}
	// Both failed connects happened before the ask: at least 2 refused dials were logged.
	if strings.Count(out.String(), "[SOCKET_ERROR]") < 2 {
		t.Fatalf("asked before two failed connects:\n%s", out.String())
	}
}

func TestTheSameRelayAdvisedKeepsBackingOffWithoutASecondAskWithinTheInterval(t *testing.T) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1")
	p, out := startFailoverPeer(t, n, 2)
	relayA := p.relay()
	<-n.acceptedConn
	<-n.acceptedConn
	n.liveJWT.Store("jwt-2")
	n.relayAdvice.Store(relayA)
	// This time relay A is up but closes every new connection before `connected` (1011).
	n.closeEarly.Store(true)
	n.mu.Lock()
	for _, c := range n.conns {
		_ = c.UnderlyingConn().Close()
	}
	n.mu.Unlock()

	waitFor(t, "the failover ask", func() bool { return strings.Contains(out.String(), "[FAILOVER_CHECK]") })
	// Keep failing for a while: many more failed connects, still one ask (the interval is 30 s).
	waitFor(t, "10 more failed connects", func() bool { return strings.Count(out.String(), "code=1011") >= 12 })
	if got := n.refreshes.Load(); got != 1 || p.FailoverAsks() != 1 {
		t.Fatalf("refresh calls %d, asks %d, want 1\n%s", got, p.FailoverAsks(), out.String())
	}
	if p.relay() != relayA || strings.Contains(out.String(), "[FAILOVER] ") {
		t.Fatalf("moved although the API advised the same relay:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "is still the assigned relay; backing off") {
		t.Fatalf("%s", out.String())
	}
}

func TestARelayStillAdvisedIsCheckedAgainWhenTheIntervalEndsNotAtTheNextAttempt(t *testing.T) {
	n, relayB := twoRelays(t)
	// Failed connects at 0.4 s (it asks), 1.2-1.6 s (too soon to ask) and 2.8-4.0 s (delays double,
	// plus up to half as jitter): the re-check due when the 1.5 s interval ends comes at about 1.9 s.
	p, out := startTunedPeer(t, n, func(cfg *Config) {
		cfg.Connections = 1
		cfg.Timing.Backoff = BackoffPolicy{Base: 400 * time.Millisecond, Max: 30 * time.Second, Jitter: time.Millisecond, Stable: time.Minute}
		cfg.Timing.FailoverAfterFailures = 1
		cfg.Timing.FailoverCheck = 1500 * time.Millisecond
	})
	relayA := p.relay()
	<-n.acceptedConn
	n.liveJWT.Store("jwt-2")    // the token the failover refreshes hand out
	n.relayAdvice.Store(relayA) // the API still lists the dead relay alive at the first check
	killRelay(n)
	waitFor(t, "the first check", func() bool { return strings.Contains(out.String(), "[FAILOVER_CHECK]") })
	n.relayAdvice.Store(wsURL(relayB)) // its entry ran out
	t0 := time.Now()
	select {
	case <-n.acceptedConn:
	case <-time.After(5 * time.Second):
		t.Fatalf("no move to relay B after the interval:\n%s", out.String())
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Fatalf("moved after %s: waited for a socket's backoff, not the interval", took)
	}
	if p.relay() != wsURL(relayB) || p.FailoverAsks() != 2 {
		t.Fatalf("relay %s, asks %d, want relay B after 2", p.relay(), p.FailoverAsks())
	}
}

// busyAPIPeer is a one-socket peer whose relay A is then killed while relay B is advised, and whose
// next `busy` relay checks the API answers 503 (with Retry-After: 1 unless noHint).
func busyAPIPeer(t *testing.T, check time.Duration, busy int32, noHint bool) (*fakeNetwork, *Peer, *syncBuffer) {
	n, relayB := twoRelays(t)
	p, out := startTunedPeer(t, n, func(cfg *Config) {
		cfg.Connections = 1
		cfg.Timing.Backoff = BackoffPolicy{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 5 * time.Millisecond, Stable: time.Minute}
		cfg.Timing.FailoverCheck = check
	})
	<-n.acceptedConn
	n.liveJWT.Store("jwt-2")
	n.relayAdvice.Store(wsURL(relayB))
	n.busyNoHint.Store(noHint)
	n.refreshBusy.Store(busy)
	n.mu.Lock()
	n.refreshedAt = nil
	n.mu.Unlock()
	killRelay(n)
	return n, p, out
}

func TestACheckTheAPICannotAnswerIsRetriedAfterItsRetryAfterWithoutRegisteringAgain(t *testing.T) {
	n, p, out := busyAPIPeer(t, 10*time.Second, 1, false) // the first check gets 503, Retry-After: 1
	waitFor(t, "the failed check", func() bool { return strings.Contains(out.String(), "[FAILOVER_CHECK_FAILED]") })
	t0 := time.Now()
	select {
	case <-n.acceptedConn:
	case <-time.After(5 * time.Second):
		t.Fatalf("no move to relay B after the Retry-After:\n%s", out.String())
	}
	// Retry-After: 1 plus up to half of it as jitter, far inside the 10 s interval.
	if took := time.Since(t0); took < 900*time.Millisecond || took > 3*time.Second {
		t.Fatalf("moved %s after the failed check, want about 1-2 s", took)
	}
	// A busy API is no reason to register again: that doubles the calls of a storm.
	if n.registers.Load() != 1 || n.refreshes.Load() != 2 || p.FailoverAsks() != 2 {
		t.Fatalf("registers %d refreshes %d asks %d, want 1, 2, 2\n%s", n.registers.Load(), n.refreshes.Load(), p.FailoverAsks(), out.String())
	}
}

func TestChecksTheAPIKeepsNotAnsweringWaitTwiceAsLongEachTime(t *testing.T) {
	// A fifteenth of the 3 s interval: retries after 200-300, 400-600 and 800-1200 ms.
	n, p, out := busyAPIPeer(t, 3*time.Second, 3, true)
	select {
	case <-n.acceptedConn:
	case <-time.After(10 * time.Second):
		t.Fatalf("no move to relay B:\n%s", out.String())
	}
	n.mu.Lock()
	at := append([]time.Time(nil), n.refreshedAt...)
	n.mu.Unlock()
	if len(at) != 4 || p.FailoverAsks() != 4 {
		t.Fatalf("refreshes %d, asks %d, want 4 and 4\n%s", len(at), p.FailoverAsks(), out.String())
	}
	g1, g2, g3 := at[1].Sub(at[0]), at[2].Sub(at[1]), at[3].Sub(at[2])
	if g1 < 190*time.Millisecond || g2 <= g1 || g3 <= g2 || g3 < 790*time.Millisecond || g3*2 < g1*5 {
		t.Fatalf("gaps between checks %s, %s, %s: want each about twice the one before, from 200 ms", g1, g2, g3)
	}
}

func TestAnAPIWithoutRelayAdviceIsNoAdvice(t *testing.T) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1")
	p, out := startFailoverPeer(t, n, 1)
	relayA := p.relay()
	<-n.acceptedConn
	n.liveJWT.Store("jwt-2")
	killRelay(n)
	waitFor(t, "the failover ask", func() bool { return strings.Contains(out.String(), "[FAILOVER_CHECK]") })
	if p.relay() != relayA || !strings.Contains(out.String(), "is still the assigned relay; backing off") || n.refreshes.Load() != 1 {
		t.Fatalf("relay %s refreshes %d\n%s", p.relay(), n.refreshes.Load(), out.String())
	}
}

func TestARefusedRefreshTokenRegistersAgainAndFollowsTheRegistrationsRelay(t *testing.T) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1") // what registration hands out, on both relays
	relayB := httptest.NewServer(n.relayHandler)
	defer relayB.Close()
	p, out := startFailoverPeer(t, n, 1)
	<-n.acceptedConn
	n.refuseToken.Store(true)
	n.relayAdvice.Store(wsURL(relayB))
	killRelay(n)
	select {
	case <-n.acceptedConn:
	case <-time.After(5 * time.Second):
		t.Fatalf("the socket did not reach relay B:\n%s", out.String())
	}
	if n.refreshes.Load() != 1 || n.registers.Load() != 2 || p.relay() != wsURL(relayB) {
		t.Fatalf("refreshes %d registers %d relay %s\n%s", n.refreshes.Load(), n.registers.Load(), p.relay(), out.String())
	}
	if state := ReadState(p.cfg.StateFile); state == nil || state.Relay != wsURL(relayB) {
		t.Fatalf("state file %+v", state)
	}
}

func TestAPinnedRelayNeverAsksForFailover(t *testing.T) {
	n, relayB := twoRelays(t)
	n.relayAdvice.Store(wsURL(relayB))
	p, out := startFailoverPeer(t, n, 2, "-relay="+wsURL(n.relay))
	<-n.acceptedConn
	<-n.acceptedConn
	killRelay(n)
	waitFor(t, "10 failed connects", func() bool { return strings.Count(out.String(), "[SOCKET_ERROR]") >= 10 })
	if got := n.refreshes.Load(); got != 0 || p.FailoverAsks() != 0 || p.relay() != wsURL(n.relay) {
		t.Fatalf("pinned peer asked (%d refreshes) or moved to %s\n%s", got, p.relay(), out.String())
	}
}

func TestAnAuthCloseIsNotAFailedConnect(t *testing.T) {
	n := newFakeNetwork(t) // the relay takes jwt-2 only: the first connects get 4002
	p, out := startFailoverPeer(t, n, 4)
	waitFor(t, "4 acks", func() bool { return strings.Count(out.String(), "[ACK]") == 4 })
	if p.FailoverAsks() != 0 || n.refreshes.Load() != 1 || strings.Contains(out.String(), "FAILOVER") {
		t.Fatalf("asks %d refreshes %d\n%s", p.FailoverAsks(), n.refreshes.Load(), out.String())
	}
	if strings.Count(out.String(), "code="+strconv.Itoa(wire.CloseBadToken)) < 1 {
		t.Fatalf("no 4002 seen:\n%s", out.String())
	}
}

func TestJitterGrowsWithTheDelayAfterTheFirstReconnect(t *testing.T) {
	p := DefaultBackoff
	cases := []struct {
		attempt  int
		min, max time.Duration // random 0 and random -> 1
	}{
		{0, 5 * time.Second, 7 * time.Second},     // base + 0..2 s, as before
		{1, 10 * time.Second, 15 * time.Second},   // + 0..max(2 s, 5 s)
		{2, 20 * time.Second, 30 * time.Second},   // + 0..10 s
		{5, 120 * time.Second, 180 * time.Second}, // the ceiling + 0..60 s
		{9, 120 * time.Second, 180 * time.Second},
	}
	for _, c := range cases {
		if got := BackoffDelay(p, c.attempt, 0); got != c.min {
			t.Errorf("attempt %d random 0: %v want %v", c.attempt, got, c.min)
		}
		if got := BackoffDelay(p, c.attempt, 0.999999); got <= c.max-time.Millisecond || got >= c.max {
			t.Errorf("attempt %d random ~1: %v want just under %v", c.attempt, got, c.max)
		}
	}
	// A jitter floor above delay/2 still applies after the first attempt.
	small := BackoffPolicy{Base: 100 * time.Millisecond, Max: time.Second, Jitter: 2 * time.Second}
	if got := BackoffDelay(small, 1, 0.5); got != 200*time.Millisecond+time.Second {
		t.Errorf("jitter floor: %v", got)
	}
}
