package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/peerproxy/peerproxy/peer-go/wire"
)

// windowUpdateStep: credit goes back to the relay once this much of its data reached the target,
// so the relay never idles on credit and window updates stay rare.
const windowUpdateStep = wire.InitialWindow / 4

// Relay -> target windows grow for a fast tunnel, as the relay's do the other way: when a whole
// window arrives within windowGrowWithin and the target has written all of it, the next window
// update adds the window's size again (credit is additive, docs/protocol.md), up to windowMax.
// All tunnels of the process together grow at most windowGrowthBudget beyond their initial
// windows, given back as tunnels end.
const (
	windowMax          = 8 << 20
	windowGrowWithin   = 50 * time.Millisecond
	windowGrowthBudget = 64 << 20
)

var windowGrown atomic.Int64

// maxQueued bounds relay bytes waiting for a slow target: twice the window we granted plus a
// frame. A flow-v1 relay never exceeds its window; one that does is misbehaving and loses the
// session rather than our memory.
func maxQueued(window int) int { return 2*window + wire.MaxFrameBytes }

// tunnel is one relayed TCP session (flow-v1). Raw bytes both ways, never interpreted (TLS stays
// end to end). Target -> relay spends the relay's credit and stops reading the target when it
// runs out; relay -> target grants credit back as the target accepts bytes, so memory per
// session stays bounded by the window on both sides.
type tunnel struct {
	sock      *relaySocket
	sessionID string
	host      string
	port      int
	target    string
	started   time.Time
	ctx       context.Context
	cancel    context.CancelFunc

	mu         sync.Mutex
	cond       *sync.Cond
	tcp        *net.TCPConn
	sendCredit int
	window     int       // the credit we keep the relay at: InitialWindow, grown for a fast tunnel
	epochAt    time.Time // when the current window's worth of relay bytes began to arrive
	epochBytes int       // and how many have
	queue      [][]byte
	queued     int
	relayEnded bool
	writerDone bool
	finished   bool
	up, down   int64
}

func newTunnel(s *relaySocket, sessionID, host string, port int) *tunnel {
	target := host + ":" + strconv.Itoa(port)
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		target = "[" + host + "]:" + strconv.Itoa(port)
	}
	t := &tunnel{sock: s, sessionID: sessionID, host: host, port: port, target: target,
		started: time.Now(), sendCredit: wire.InitialWindow, window: wire.InitialWindow}
	t.cond = sync.NewCond(&t.mu)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

func dialFailure(err error) (reason, detail string) {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused", "ECONNREFUSED"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout", "ETIMEDOUT"
	default:
		return "unknown", err.Error()
	}
}

// open resolves, checks and connects; every outcome is reported to the relay.
func (t *tunnel) open() {
	p := t.sock.peer
	p.verbose(fmt.Sprintf("[TUNNEL_CONNECT] session=%s target=%s", t.sessionID, t.target))
	if t.port < 1 || t.port > 65535 {
		t.fail("unknown", fmt.Sprintf("bad port %d", t.port))
		return
	}
	// The relay's connect timeout covers the lookup too: it must hear why before it gives up.
	ctx, cancel := context.WithTimeout(t.ctx, p.cfg.Timing.ConnectTimeout)
	defer cancel()
	addr, err := ResolveTarget(ctx, p.resolver, t.host, p.cfg.AllowPrivate)
	if err != nil {
		var te *TargetError
		if errors.As(err, &te) {
			t.fail(te.Reason, te.Detail)
		} else {
			t.fail("unknown", err.Error())
		}
		return
	}
	// Connect to the address we checked, not the name: no second lookup that could answer differently.
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, uint16(t.port)).String())
	if err != nil {
		reason, detail := dialFailure(err)
		t.fail(reason, detail)
		return
	}
	tcp := conn.(*net.TCPConn)
	_ = tcp.SetNoDelay(true)
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		_ = tcp.Close()
		return
	}
	t.tcp = tcp
	t.mu.Unlock()
	t.sock.sendControl("tunnel_connected", map[string]any{"sessionId": t.sessionID})
	p.verbose(fmt.Sprintf("[TCP_OPEN_OK] session=%s target=%s addr=%s ms=%d", t.sessionID, t.target, addr, time.Since(t.started).Milliseconds()))
	go t.toTarget()
	t.toRelay()
}

func (t *tunnel) fail(reason, detail string) {
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		return
	}
	t.finished = true
	t.mu.Unlock()
	t.cancel()
	t.sock.sendControl("tunnel_open_failed", map[string]any{
		"sessionId":  t.sessionID,
		"reason":     reason,
		"detail":     detail,
		"durationMs": time.Since(t.started).Milliseconds(),
	})
	t.sock.peer.verbose(fmt.Sprintf("[TCP_OPEN_FAIL] session=%s target=%s reason=%s detail=%s", t.sessionID, t.target, reason, detail))
	t.sock.forget(t.sessionID)
}

// toRelay reads the target as far as the relay's credit allows and frames it.
func (t *tunnel) toRelay() {
	room := wire.DataFrameBytes - 2 - len(t.sessionID)
	buf := make([]byte, room)
	var readErr error
	for {
		t.mu.Lock()
		for t.sendCredit <= 0 && !t.finished {
			t.cond.Wait()
		}
		if t.finished {
			t.mu.Unlock()
			return
		}
		n := min(t.sendCredit, room)
		t.mu.Unlock()
		got, err := t.tcp.Read(buf[:n])
		if got > 0 {
			t.mu.Lock()
			t.sendCredit -= got
			t.up += int64(got)
			t.mu.Unlock()
			frame, _ := wire.EncodeFrame(wire.FrameData, t.sessionID, buf[:got])
			t.sock.sendBinary(frame)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = err
			}
			break
		}
	}
	if readErr != nil {
		t.finish(true, readErr.Error())
		return
	}
	// The target finished sending: half-close towards the relay, then wait for the other direction.
	end, _ := wire.EncodeFrame(wire.FrameEnd, t.sessionID, nil)
	t.sock.sendBinary(end)
	t.mu.Lock()
	for !t.writerDone && !t.finished {
		t.cond.Wait()
	}
	t.mu.Unlock()
	t.finish(true, "")
}

// toTarget writes relay bytes to the target in order and grants credit back as they land.
func (t *tunnel) toTarget() {
	drained := 0
	for {
		t.mu.Lock()
		for len(t.queue) == 0 && !t.relayEnded && !t.finished {
			t.cond.Wait()
		}
		if t.finished {
			t.mu.Unlock()
			return
		}
		if len(t.queue) == 0 { // relay ended and everything is written
			t.writerDone = true
			t.cond.Broadcast()
			t.mu.Unlock()
			_ = t.tcp.CloseWrite()
			return
		}
		chunk := t.queue[0]
		t.queue[0] = nil
		t.queue = t.queue[1:]
		t.queued -= len(chunk)
		t.mu.Unlock()
		if _, err := t.tcp.Write(chunk); err != nil {
			t.finish(true, err.Error())
			return
		}
		t.mu.Lock()
		t.down += int64(len(chunk))
		t.mu.Unlock()
		drained += len(chunk)
		t.mu.Lock()
		// Bigger windows grant in bigger steps: window updates stay about eight per window.
		due := drained >= max(windowUpdateStep, t.window/8)
		credit := drained
		if due {
			credit += t.grownLocked()
		}
		t.mu.Unlock()
		if due {
			frame, _ := wire.EncodeWindow(t.sessionID, uint32(credit))
			t.sock.sendBinary(frame)
			drained = 0
		}
	}
}

// grownLocked is the extra credit when a whole window arrived fast and the target kept up (at most
// a quarter of the window still queued for it); t.mu is held.
func (t *tunnel) grownLocked() int {
	// A finished tunnel gave its growth back already; the writer may still be on its last chunk.
	if t.finished || t.epochBytes < t.window {
		return 0
	}
	fast := time.Since(t.epochAt) <= windowGrowWithin && t.queued <= t.window/4
	t.epochBytes = 0
	if !fast {
		return 0
	}
	for {
		grown := windowGrown.Load()
		extra := min(t.window, windowMax-t.window, windowGrowthBudget-int(grown))
		if extra <= 0 {
			return 0
		}
		if windowGrown.CompareAndSwap(grown, grown+int64(extra)) {
			t.window += extra
			return extra
		}
	}
}

// onRelayData is a data frame (or legacy tunnel_data) from the relay; payload is not reused by the caller.
func (t *tunnel) onRelayData(payload []byte) {
	if len(payload) == 0 {
		return
	}
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		return
	}
	if t.queued+len(payload) > maxQueued(t.window) {
		t.mu.Unlock()
		t.finish(true, "relay exceeded the flow-v1 window")
		return
	}
	if t.epochBytes == 0 {
		t.epochAt = time.Now()
	}
	t.epochBytes += len(payload)
	t.queue = append(t.queue, payload)
	t.queued += len(payload)
	t.cond.Broadcast()
	t.mu.Unlock()
}

// onRelayEnd: the customer finished sending; half-close towards the target once the queue is written.
func (t *tunnel) onRelayEnd() {
	t.mu.Lock()
	t.relayEnded = true
	t.cond.Broadcast()
	t.mu.Unlock()
}

// onRelayWindow: the relay granted more credit.
func (t *tunnel) onRelayWindow(credit uint32) {
	t.mu.Lock()
	t.sendCredit += int(credit)
	t.cond.Broadcast()
	t.mu.Unlock()
}

// close: the relay closed the session (tunnel_close / close frame) or the socket went away.
func (t *tunnel) close() { t.finish(false, "") }

func (t *tunnel) finish(tellRelay bool, errText string) {
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		return
	}
	t.finished = true
	t.queue, t.queued = nil, 0
	windowGrown.Add(-int64(t.window - wire.InitialWindow))
	t.window = wire.InitialWindow
	tcp := t.tcp
	up, down := t.up, t.down
	t.cond.Broadcast()
	t.mu.Unlock()
	t.cancel()
	if tcp != nil {
		_ = tcp.Close()
	}
	if tellRelay {
		msg := map[string]any{"sessionId": t.sessionID}
		if errText != "" {
			msg["error"] = errText
		}
		t.sock.sendControl("tunnel_closed", msg)
	}
	t.sock.peer.verbose(fmt.Sprintf("[TUNNEL_CLOSED] session=%s up=%d down=%d", t.sessionID, up, down))
	t.sock.forget(t.sessionID)
}
