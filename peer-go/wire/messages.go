package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
