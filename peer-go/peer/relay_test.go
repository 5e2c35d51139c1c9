package peer

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/peerproxy/peerproxy/peer-go/wire"
)

// A stand-in API and relay on loopback: enough of PROTOCOL.md sections 1-2 to drive the peer.
type fakeNetwork struct {
	api, relay   *httptest.Server
	registers    atomic.Int32
	refreshes    atomic.Int32
	liveJWT      atomic.Value // the token the relay accepts
	mu           sync.Mutex
	conns        []*websocket.Conn
	deviceInfos  []map[string]any
	tokenInURL   atomic.Bool
	acceptedConn chan *websocket.Conn
	relayHandler http.Handler
	relayAdvice  atomic.Value // the `relay` a refresh answers with; "" = none (an older API)
	closeEarly   atomic.Bool  // the relay closes new connections with 1011 before `connected`
	refuseToken  atomic.Bool  // refresh answers 401 (a spent or revoked refresh token)
	refreshBusy  atomic.Int32 // this many refreshes answer 503 with Retry-After: 1 (a database at its limit)
	busyNoHint   atomic.Bool  // those 503s carry no Retry-After
	refreshedAt  []time.Time  // when each refresh arrived (under mu)
}

func newFakeNetwork(t *testing.T) *fakeNetwork {
	n := &fakeNetwork{acceptedConn: make(chan *websocket.Conn, 16)}
	n.liveJWT.Store("jwt-2")
	n.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		switch {
		case r.URL.Path == "/v1/peer/agents/register":
			n.registers.Add(1)
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"deviceId": wire.DeviceID(body["apiKey"].(string), body["name"].(string)),
				"jwt":      "jwt-1", "token": "jwt-1", "refreshToken": "rt-1",
				"relay": n.assignedRelay(),
			})
		case strings.HasSuffix(r.URL.Path, "/refresh"):
			n.refreshes.Add(1)
			n.mu.Lock()
			n.refreshedAt = append(n.refreshedAt, time.Now())
			n.mu.Unlock()
			if n.refreshBusy.Add(-1) >= 0 {
				if !n.busyNoHint.Load() {
					w.Header().Set("retry-after", "1")
				}
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"error":{"code":"E_UNAVAILABLE","message":"the database is busy"}}`))
				return
			}
			if n.refuseToken.Load() {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte(`{"error":{"code":"E_UNAUTHORIZED","message":"refreshToken is unknown"}}`))
				return
			}
			time.Sleep(50 * time.Millisecond) // all sockets see 4002 while this is in flight
			answer := map[string]any{"jwt": "jwt-2", "token": "jwt-2", "refreshToken": "rt-2"}
			if advice, _ := n.relayAdvice.Load().(string); advice != "" {
				answer["relay"] = advice
			}
			_ = json.NewEncoder(w).Encode(answer)
		default:
			http.NotFound(w, r)
		}
	}))
	n.relayHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			n.tokenInURL.Store(true)
		}
		proto := r.Header.Get("Sec-WebSocket-Protocol")
		upgrader := websocket.Upgrader{Subprotocols: []string{proto}} // echo the token subprotocol
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if n.closeEarly.Load() {
			_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "overloaded"))
			time.Sleep(20 * time.Millisecond)
			_ = conn.Close()
			return
		}
		if proto != "token."+n.liveJWT.Load().(string) {
			_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(wire.CloseBadToken, "expired"))
			time.Sleep(20 * time.Millisecond)
			_ = conn.Close()
			return
		}
		_, first, err := conn.ReadMessage()
		if err != nil {
			return
		}
		info, _ := wire.ParseControl(first)
		n.mu.Lock()
		n.conns = append(n.conns, conn)
		n.deviceInfos = append(n.deviceInfos, info.Payload)
		n.mu.Unlock()
		_ = conn.WriteMessage(websocket.TextMessage, wire.EncodeControl("connected", map[string]any{"deviceId": "x", "ip": "127.0.0.1", "relayId": "relay_test"}))
		n.acceptedConn <- conn
	})
	n.relay = httptest.NewServer(n.relayHandler)
	t.Cleanup(func() {
		n.mu.Lock()
		for _, c := range n.conns {
			_ = c.Close()
		}
		n.mu.Unlock()
		n.relay.Close()
		n.api.Close()
	})
	return n
}

// assignedRelay is what registration answers: the advised relay once set, else relay A.
func (n *fakeNetwork) assignedRelay() string {
	if advice, _ := n.relayAdvice.Load().(string); advice != "" {
		return advice
	}
	return "ws" + strings.TrimPrefix(n.relay.URL, "http")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startTestPeer(t *testing.T, n *fakeNetwork, connections int) (*Peer, *syncBuffer) {
	return startTunedPeer(t, n, func(cfg *Config) {
		cfg.Connections = connections
		cfg.Timing.Backoff = BackoffPolicy{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: 5 * time.Millisecond, Stable: time.Minute}
	})
}

// startTunedPeer starts a peer against the stand-ins with extra flags (-relay=... pins the relay),
// after tune has set its connections and timing.
func startTunedPeer(t *testing.T, n *fakeNetwork, tune func(*Config), extra ...string) (*Peer, *syncBuffer) {
	args := append([]string{"-key=psx_unit", "-name=rig-001", "-allow-private", "-verbose",
		"-api=" + n.api.URL, "-state=" + t.TempDir() + "/state.json"}, extra...)
	cfg, err := ParseArgs(args, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	tune(&cfg)
	out := &syncBuffer{}
	p := New(cfg, out)
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The stand-in relay does not answer close frames: drop its side so Stop need not wait.
		n.mu.Lock()
		for _, c := range n.conns {
			_ = c.Close()
		}
		n.mu.Unlock()
		p.Stop()
	})
	return p, out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestA4002OnEverySocketCostsExactlyOneRefresh(t *testing.T) {
	n := newFakeNetwork(t)
	p, out := startTestPeer(t, n, 4)
	waitFor(t, "4 acks", func() bool { return strings.Count(out.String(), "[ACK] relay confirmed connection") == 4 })
	if got := n.refreshes.Load(); got != 1 {
		t.Fatalf("refresh calls: %d, want 1\n%s", got, out.String())
	}
	if n.registers.Load() != 1 || strings.Count(out.String(), "[REFRESHED]") != 1 || p.OpenSockets() != 4 {
		t.Fatalf("registers=%d\n%s", n.registers.Load(), out.String())
	}
	if n.tokenInURL.Load() || strings.Contains(out.String(), "jwt-") {
		t.Fatal("the token went into a URL or the log")
	}
	n.mu.Lock()
	info := n.deviceInfos[0]
	n.mu.Unlock()
	if info["protocol"] != "binary-v1" || info["supportsRelayRedirect"] != true || info["capabilities"].([]any)[0] != "flow-v1" {
		t.Fatalf("device_info %v", info)
	}
}

// openTunnel starts a loopback target that serves its first connection with serve, and asks the
// peer on conn to open session sid to it.
func openTunnel(t *testing.T, conn *websocket.Conn, sid string, serve func(net.Conn)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		serve(c)
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	_ = conn.WriteMessage(websocket.TextMessage, wire.EncodeControl("tunnel_connect", map[string]any{"sessionId": sid, "host": "127.0.0.1", "port": port}))
}

func TestTunnelSpendsCreditHalfClosesAndReportsClosed(t *testing.T) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1")
	_, out := startTestPeer(t, n, 1)
	conn := <-n.acceptedConn

	// The target echoes everything, then half-closes its side once we half-close ours.
	openTunnel(t, conn, "s1", func(c net.Conn) {
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
	})

	read := func() (int, []byte) {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		kind, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("relay read: %v\n%s", err, out.String())
		}
		return kind, data
	}
	for {
		kind, data := read()
		if msg, ok := wire.ParseControl(data); kind == websocket.TextMessage && ok && msg.Type == "tunnel_connected" {
			break
		}
	}
	const total = 400 * 1024 // more than the initial window
	payload := bytes.Repeat([]byte("0123456789abcdef"), total/16)
	for off := 0; off < total; off += 16 * 1024 {
		f, _ := wire.EncodeFrame(wire.FrameData, "s1", payload[off:off+16*1024])
		_ = conn.WriteMessage(websocket.BinaryMessage, f)
	}
	end, _ := wire.EncodeFrame(wire.FrameEnd, "s1", nil)
	_ = conn.WriteMessage(websocket.BinaryMessage, end)

	var echoed bytes.Buffer
	granted := false
	windows := 0
	gotEnd := false
	for !gotEnd || echoed.Len() < total {
		kind, data := read()
		if kind == websocket.TextMessage {
			continue
		}
		f, err := wire.DecodeFrame(data)
		if err != nil {
			t.Fatal(err)
		}
		switch f.Type {
		case wire.FrameData:
			echoed.Write(f.Payload)
			if echoed.Len() > wire.InitialWindow && !granted {
				t.Fatalf("peer sent %d bytes on a %d window", echoed.Len(), wire.InitialWindow)
			}
		case wire.FrameWindow:
			windows++
		case wire.FrameEnd:
			gotEnd = true
		}
		if echoed.Len() == wire.InitialWindow && !granted {
			// The peer must now wait for credit; give it the rest.
			time.Sleep(50 * time.Millisecond)
			granted = true
			w, _ := wire.EncodeWindow("s1", total)
			_ = conn.WriteMessage(websocket.BinaryMessage, w)
		}
	}
	if !bytes.Equal(echoed.Bytes(), payload) {
		t.Fatal("echo differs")
	}
	if windows == 0 {
		t.Fatal("peer granted no credit back for 400 KiB")
	}
	for {
		kind, data := read()
		if msg, ok := wire.ParseControl(data); kind == websocket.TextMessage && ok && msg.Type == "tunnel_closed" {
			break
		}
	}
	waitFor(t, "tunnel log", func() bool { return strings.Contains(out.String(), "[TUNNEL_CLOSED] session=s1 up=409600 down=409600") })
}

func TestBlockedTargetWithoutTheDevelopmentFlag(t *testing.T) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1")
	p, _ := startTestPeer(t, n, 1)
	p.cfg.AllowPrivate = false
	conn := <-n.acceptedConn
	_ = conn.WriteMessage(websocket.TextMessage, wire.EncodeControl("tunnel_connect", map[string]any{"sessionId": "s2", "host": "169.254.169.254", "port": 80}))
	for {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if msg, ok := wire.ParseControl(data); ok && msg.Type == "tunnel_open_failed" {
			if msg.String("reason") != "blocked_target" || msg.String("sessionId") != "s2" {
				t.Fatalf("%v", msg.Payload)
			}
			return
		}
	}
}

func TestARedirectMovesEverySocketWith4100AndIsSaved(t *testing.T) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1")
	second := httptest.NewServer(n.relayHandler)
	defer second.Close()
	target := "ws" + strings.TrimPrefix(second.URL, "http")
	p, out := startTestPeer(t, n, 2)
	first := []*websocket.Conn{<-n.acceptedConn, <-n.acceptedConn}
	_ = first[0].WriteMessage(websocket.TextMessage, wire.EncodeControl("relay_redirect", map[string]any{"relay": target, "reason": "geo"}))
	for _, c := range first {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var code int
		for code == 0 {
			if _, _, err := c.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("expected a close frame, got %v", err)
				}
				code = ce.Code
			}
		}
		if code != wire.CloseRedirect {
			t.Fatalf("close code %d, want 4100", code)
		}
	}
	<-n.acceptedConn
	<-n.acceptedConn
	if p.relay() != target || ReadState(p.cfg.StateFile).Relay != target {
		t.Fatalf("relay now %s, state %+v", p.relay(), ReadState(p.cfg.StateFile))
	}
	// A second redirect within the cooldown is ignored.
	_ = first[0].Close()
	p.onRedirect("ws://127.0.0.1:1", "geo")
	if p.relay() != target || !strings.Contains(out.String(), "last redirect too recent") {
		t.Fatalf("second redirect followed:\n%s", out.String())
	}
}

func TestARefusedConnectIsReportedAsConnectionRefused(t *testing.T) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1")
	startTestPeer(t, n, 1)
	conn := <-n.acceptedConn
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	_ = conn.WriteMessage(websocket.TextMessage, wire.EncodeControl("tunnel_connect", map[string]any{"sessionId": "s3", "host": "127.0.0.1", "port": port}))
	for {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if msg, ok := wire.ParseControl(data); ok && msg.Type == "tunnel_open_failed" {
			if msg.String("reason") != "connection_refused" {
				t.Fatalf("%v", msg.Payload)
			}
			return
		}
	}
}

func TestAFastTunnelsRelayToTargetWindowGrowsToItsMaxAndGivesTheBudgetBack(t *testing.T) {
	n := newFakeNetwork(t)
	n.liveJWT.Store("jwt-1")
	_, out := startTestPeer(t, n, 1)
	conn := <-n.acceptedConn

	// The target reads as fast as it can and keeps nothing.
	openTunnel(t, conn, "s-grow", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })

	var credit atomic.Int64
	credit.Store(wire.InitialWindow)
	connected := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		for {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			kind, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if kind == websocket.TextMessage {
				if msg, ok := wire.ParseControl(data); ok && msg.Type == "tunnel_connected" {
					close(connected)
				} else if ok && msg.Type == "tunnel_closed" {
					close(closed)
					return
				}
				continue
			}
			if f, err := wire.DecodeFrame(data); err == nil && f.Type == wire.FrameWindow {
				c, _ := wire.WindowCredit(f)
				credit.Add(int64(c))
			}
		}
	}()
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		t.Fatalf("no tunnel_connected\n%s", out.String())
	}
	const total = 48 << 20
	chunk := bytes.Repeat([]byte{7}, 64<<10)
	frame, _ := wire.EncodeFrame(wire.FrameData, "s-grow", chunk)
	sent := 0
	deadline := time.Now().Add(30 * time.Second)
	for sent < total {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d bytes sent within the peer's credit", sent, total)
		}
		if int64(sent+len(chunk)) > credit.Load() {
			time.Sleep(time.Millisecond)
			continue
		}
		_ = conn.WriteMessage(websocket.BinaryMessage, frame)
		sent += len(chunk)
	}
	waitFor(t, "a window grown past 1 MiB", func() bool { return credit.Load()-int64(sent) >= 1<<20 })
	window := credit.Load() - int64(sent)
	t.Logf("relay -> target window after 48 MiB to a fast sink: %d B", window)
	if window > windowMax {
		t.Fatalf("window %d past the max %d", window, windowMax)
	}
	if windowGrown.Load() <= 0 {
		t.Fatalf("no growth counted in the process budget")
	}
	_ = conn.WriteMessage(websocket.TextMessage, wire.EncodeControl("tunnel_close", map[string]any{"sessionId": "s-grow"}))
	waitFor(t, "the budget given back", func() bool { return windowGrown.Load() == 0 })
}
