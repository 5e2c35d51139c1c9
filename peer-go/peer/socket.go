package peer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/peerproxy/peerproxy/peer-go/wire"
)

// relaySocket is one of the device's N parallel relay sockets with its own reconnect loop.
// Tunnels live on the socket the relay opened them on and die with it.
type relaySocket struct {
	peer  *Peer
	index int
	move  chan struct{} // follow a redirect: close with 4100 and reconnect at once

	writeMu sync.Mutex // gorilla allows one writer at a time
	mu      sync.Mutex
	conn    *websocket.Conn
	tunnels map[string]*tunnel
	lastRx  time.Time
	acked   bool // the relay sent `connected` on the current connection

	// failed connects in a row to failRelay, for the peer's delayed failover re-check
	failRelay string
	failCount int
}

func (s *relaySocket) setFailing(relay string, count int) {
	s.mu.Lock()
	s.failRelay, s.failCount = relay, count
	s.mu.Unlock()
}

// failing is how many connects in a row to relay failed on this socket (0 after a `connected`).
func (s *relaySocket) failing(relay string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !sameRelay(relay, s.failRelay) {
		return 0
	}
	return s.failCount
}

func newRelaySocket(p *Peer, index int) *relaySocket {
	return &relaySocket{peer: p, index: index, move: make(chan struct{}, 1), tunnels: map[string]*tunnel{}}
}

// session is how one connection ended.
type session struct {
	code   int // close code; 1006 when the connection dropped without one
	status int // HTTP status of a refused handshake
	up     time.Duration
	moving bool // we closed it to follow a redirect
	acked  bool // the relay confirmed the connection before it ended
}

func (s *relaySocket) open() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// run connects, serves and reconnects until ctx ends (PROTOCOL.md section 2 backoff).
func (s *relaySocket) run(ctx context.Context) {
	p := s.peer
	backoff := NewBackoff(p.cfg.Timing.Backoff)
	authFailures := 0
	// connects in a row to failedRelay that never reached `connected` (dead-relay failover)
	connectFailures, failedRelay := 0, ""
	for ctx.Err() == nil {
		// A redirect signalled while we were not connected is already in p.relay(): drop the
		// signal before reading it, or it would close the connection we are about to open.
		select {
		case <-s.move:
		default:
		}
		jwt := p.ids.Current().JWT
		relay := p.relay()
		res := s.serve(ctx, relay, jwt)
		if ctx.Err() != nil {
			return
		}
		if res.moving {
			continue
		}
		if res.acked {
			// The token worked on this connection: a later refusal is a fresh expiry, not a loop.
			authFailures = 0
		}
		var delay time.Duration
		auth := res.code == wire.CloseNoToken || res.code == wire.CloseBadToken || res.status == 401 || res.status == 403
		// Refused, timed out, a non-auth handshake status or closed before `connected`: the relay
		// may be gone. An auth close keeps its own handling and does not count either way.
		if res.acked {
			connectFailures = 0
			s.setFailing("", 0)
		} else if !auth {
			if !sameRelay(relay, failedRelay) {
				connectFailures, failedRelay = 0, relay
			}
			connectFailures++
			s.setFailing(relay, connectFailures)
			p.connectFailed(ctx, relay, connectFailures)
			if ctx.Err() != nil {
				return
			}
		}
		if auth {
			renewed := p.renew(ctx, jwt)
			// The first retry with a fresh token goes at once; a token refused again means backoff.
			if renewed && authFailures == 0 {
				delay = 0
			} else {
				delay = backoff.Next(res.up)
			}
			authFailures++
		} else {
			authFailures = 0
			delay = backoff.Next(res.up)
		}
		if delay > 0 {
			p.verbose(fmt.Sprintf("[RECONNECT] socket=%d in %d ms", s.index, delay.Milliseconds()))
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.move:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// serve runs one connection from dial to close.
func (s *relaySocket) serve(ctx context.Context, relayURL, jwt string) session {
	p := s.peer
	dialer := websocket.Dialer{
		HandshakeTimeout: p.cfg.Timing.ConnectTimeout,
		// The token travels only as the subprotocol, never in the URL (URLs end up in logs).
		Subprotocols:      []string{"token." + jwt},
		EnableCompression: false,
		ReadBufferSize:    64 * 1024,
		WriteBufferSize:   64 * 1024,
		Proxy:             http.ProxyFromEnvironment,
	}
	conn, resp, err := dialer.DialContext(ctx, relayURL, nil)
	if err != nil {
		res := session{code: 1006}
		if resp != nil {
			res.status = resp.StatusCode
		}
		p.verbose(fmt.Sprintf("[SOCKET_ERROR] socket=%d %s", s.index, err))
		return res
	}
	conn.SetReadLimit(wire.MaxFrameBytes)
	opened := time.Now()
	s.mu.Lock()
	s.conn = conn
	s.lastRx = opened
	s.acked = false
	s.mu.Unlock()
	p.log(fmt.Sprintf("[CONNECTED]  device=%s socket=%d", p.DeviceID(), s.index))
	s.sendControl("device_info", map[string]any{
		"country":               p.cfg.Country,
		"currentIp":             "auto",
		"protocol":              "binary-v1",
		"supportsRelayRedirect": true,
		"sdkVersion":            SDKVersion,
		"capabilities":          []string{"flow-v1"},
	})

	done := make(chan struct{})
	var moving bool
	var movingMu sync.Mutex
	go func() {
		ticker := time.NewTicker(p.cfg.Timing.Heartbeat)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				s.writeClose(conn, websocket.CloseNormalClosure, "peer stopping")
				// Give the relay a moment to answer the close, then drop the connection.
				select {
				case <-done:
				case <-time.After(3 * time.Second):
					_ = conn.Close()
				}
				return
			case <-s.move:
				movingMu.Lock()
				moving = true
				movingMu.Unlock()
				s.writeClose(conn, wire.CloseRedirect, "following relay_redirect")
				select {
				case <-done:
				case <-time.After(3 * time.Second):
					_ = conn.Close()
				}
				return
			case <-ticker.C:
				s.mu.Lock()
				silent := time.Since(s.lastRx)
				s.mu.Unlock()
				// The relay acks every heartbeat; three silent intervals mean a dead path TCP has not noticed.
				if silent > 3*p.cfg.Timing.Heartbeat {
					p.log(fmt.Sprintf("[STALE] socket=%d no frame from the relay, reconnecting", s.index))
					_ = conn.Close()
					return
				}
				s.sendControl("heartbeat", map[string]any{"timestamp": time.Now().UnixMilli()})
			}
		}
	}()

	code := 1006
	reason := ""
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code, reason = ce.Code, ce.Text
			}
			break
		}
		s.mu.Lock()
		s.lastRx = time.Now()
		s.mu.Unlock()
		if kind == websocket.BinaryMessage {
			s.onBinary(data)
		} else {
			s.onText(data)
		}
	}
	close(done)
	_ = conn.Close()
	s.mu.Lock()
	s.conn = nil
	acked := s.acked
	tunnels := s.tunnels
	s.tunnels = map[string]*tunnel{}
	s.mu.Unlock()
	for _, t := range tunnels {
		t.close()
	}
	line := fmt.Sprintf("[DISCONNECTED] device=%s socket=%d code=%d", p.DeviceID(), s.index, code)
	if reason != "" {
		if len(reason) > 120 {
			reason = reason[:120]
		}
		line += " reason=" + reason
	}
	p.log(line)
	movingMu.Lock()
	defer movingMu.Unlock()
	return session{code: code, up: time.Since(opened), moving: moving, acked: acked}
}

func (s *relaySocket) writeClose(conn *websocket.Conn, code int, text string) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(2*time.Second))
}

func (s *relaySocket) write(kind int, data []byte) {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	// A relay that stops reading for this long is gone; the read loop then sees the closed conn.
	_ = conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
	if err := conn.WriteMessage(kind, data); err != nil {
		_ = conn.Close()
	}
}

func (s *relaySocket) sendControl(typ string, payload map[string]any) {
	s.write(websocket.TextMessage, wire.EncodeControl(typ, payload))
}

func (s *relaySocket) sendBinary(frame []byte) { s.write(websocket.BinaryMessage, frame) }

func (s *relaySocket) forget(sessionID string) {
	s.mu.Lock()
	delete(s.tunnels, sessionID)
	s.mu.Unlock()
}

func (s *relaySocket) tunnel(sessionID string) *tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tunnels[sessionID]
}

func (s *relaySocket) onText(data []byte) {
	p := s.peer
	msg, ok := wire.ParseControl(data)
	if !ok {
		return
	}
	if err := wire.CheckRelayMessage(msg); err != nil {
		// Malformed fields: ignored like the TypeScript SDK does (shared/messages.ts), never fatal.
		p.verbose(fmt.Sprintf("[CONTROL_ERROR] socket=%d %v", s.index, err))
		return
	}
	sessionID := msg.String("sessionId")
	switch msg.Type {
	case "connected":
		s.mu.Lock()
		s.acked = true
		s.mu.Unlock()
		p.log(fmt.Sprintf("[ACK] relay confirmed connection socket=%d", s.index))
	case "tunnel_connect":
		port, _ := msg.Port("port") // checked above; text ports are accepted (liberal)
		s.mu.Lock()
		if _, dup := s.tunnels[sessionID]; dup || s.conn == nil {
			s.mu.Unlock()
			return
		}
		t := newTunnel(s, sessionID, msg.String("host"), port)
		s.tunnels[sessionID] = t
		s.mu.Unlock()
		go t.open()
	case "tunnel_close":
		if t := s.tunnel(sessionID); t != nil {
			t.close()
		}
	case "tunnel_data":
		// Legacy JSON path; a relay may still use it even though we speak binary-v1.
		if t := s.tunnel(sessionID); t != nil {
			if b, err := decodeBase64(msg.String("data")); err == nil {
				t.onRelayData(b)
			}
		}
	case "relay_redirect":
		p.onRedirect(msg.Payload["relay"], msg.Payload["reason"])
	case "rotate_ip_request":
		// A plain host cannot change its exit IP on request; say so instead of staying silent.
		s.sendControl("rotation_complete", map[string]any{"requestId": msg.Payload["requestId"], "success": false, "error": "not_supported"})
	}
	// heartbeat_ack and unknown types: nothing to do, never fatal.
}

func (s *relaySocket) onBinary(data []byte) {
	f, err := wire.DecodeFrame(data)
	if err != nil {
		s.peer.verbose(fmt.Sprintf("[FRAME_ERROR] socket=%d %s", s.index, err))
		return
	}
	t := s.tunnel(f.SessionID)
	if t == nil {
		return
	}
	switch f.Type {
	case wire.FrameData:
		t.onRelayData(f.Payload)
	case wire.FrameEnd:
		t.onRelayEnd()
	case wire.FrameClose:
		t.close()
	case wire.FrameWindow:
		if credit, ok := wire.WindowCredit(f); ok {
			t.onRelayWindow(credit)
		}
	}
}
