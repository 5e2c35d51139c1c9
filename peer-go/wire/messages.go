package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
)

// Close codes of PROTOCOL.md section 2.
const (
	CloseNoToken  = 4001 // no token, or one that cannot be parsed
	CloseBadToken = 4002 // expired, revoked or wrong claims: refresh
	CloseRedirect = 4100 // the client leaves to follow relay_redirect
)

// Reasons a peer gives in tunnel_open_failed.
var TunnelFailureReasons = []string{"connection_refused", "dns_failed", "timeout", "blocked_target", "unknown"}

// Control is one relay control message with nested and flat fields merged into Payload.
type Control struct {
	Type    string
	Payload map[string]any
}

// ParseControl accepts `{type, payload:{...}}` and flat `{type, ...fields}`; payload fields win
// over flat ones, as in shared/messages.ts. ok is false for anything that is not such an object.
func ParseControl(text []byte) (Control, bool) {
	var raw map[string]any
	if err := json.Unmarshal(text, &raw); err != nil || raw == nil {
		return Control{}, false
	}
	typ, isString := raw["type"].(string)
	if !isString {
		return Control{}, false
	}
	body := map[string]any{}
	for k, v := range raw {
		if k != "type" && k != "payload" {
			body[k] = v
		}
	}
	if nested, isObject := raw["payload"].(map[string]any); isObject {
		for k, v := range nested {
			body[k] = v
		}
	}
	return Control{Type: typ, Payload: body}, true
}

// EncodeControl is the form we always send: `{"type":...,"payload":{...}}`.
func EncodeControl(typ string, payload map[string]any) []byte {
	if payload == nil {
		payload = map[string]any{}
	}
	out, _ := json.Marshal(struct {
		Type    string         `json:"type"`
		Payload map[string]any `json:"payload"`
	}{typ, payload})
	return out
}

// String reads a string field, "" when absent or not a string.
func (c Control) String(key string) string {
	s, _ := c.Payload[key].(string)
	return s
}

// DeviceID is `agent_` + the first 16 hex chars of SHA-256(apiKey + ":" + name) (PROTOCOL.md section 1).
func DeviceID(apiKey, name string) string {
	sum := sha256.Sum256([]byte(apiKey + ":" + name))
	return "agent_" + hex.EncodeToString(sum[:8])
}

// Control message types by direction, as the zod unions in shared/messages.ts list them
// (docs/protocol.md section 2). Types outside these lists are ignored, never fatal.
var (
	PeerToRelayTypes = []string{"device_info", "heartbeat", "tunnel_connected", "tunnel_open_failed", "tunnel_closed", "tunnel_data", "rotation_complete"}
	RelayToPeerTypes = []string{"connected", "heartbeat_ack", "tunnel_connect", "tunnel_close", "tunnel_data", "relay_redirect", "rotate_ip_request"}
)

// Port reads a TCP port sent as a number or, liberally, as decimal text; ok is false otherwise or
// outside 1..65535.
func (c Control) Port(key string) (int, bool) {
	port := -1
	switch v := c.Payload[key].(type) {
	case float64:
		if v == float64(int(v)) {
			port = int(v)
		}
	case string:
		if n, err := strconv.Atoi(v); err == nil && len(v) <= 5 {
			port = n
		}
	}
	return port, port >= 1 && port <= 65535
}

// CheckRelayMessage reports a relay -> peer message of a known type whose fields the peer reads
// have the wrong shape; the peer ignores such a message, as the TypeScript SDK does.
func CheckRelayMessage(c Control) error {
	need := func(keys ...string) error {
		for _, k := range keys {
			if s, ok := c.Payload[k].(string); !ok || (k == "sessionId" || k == "host") && s == "" {
				return fmt.Errorf("%s: %s is not a non-empty string", c.Type, k)
			}
		}
		return nil
	}
	switch c.Type {
	case "tunnel_connect":
		if err := need("sessionId", "host"); err != nil {
			return err
		}
		if _, ok := c.Port("port"); !ok {
			return fmt.Errorf("tunnel_connect: port is not 1..65535")
		}
	case "tunnel_close":
		return need("sessionId")
	case "tunnel_data":
		return need("sessionId", "data")
	case "relay_redirect":
		return need("relay")
	case "rotate_ip_request":
		return need("requestId")
	case "connected":
		return need("deviceId", "ip", "relayId")
	}
	return nil
}
