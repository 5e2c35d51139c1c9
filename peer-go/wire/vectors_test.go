package wire

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"sort"
	"testing"
)

// shared/testdata/wire-vectors.json is also read by shared/wire-vectors.test.ts (the TS side).
type vectors struct {
	Frames []struct {
		Name       string `json:"name"`
		Type       byte   `json:"type"`
		SessionID  string `json:"sessionId"`
		PayloadHex string `json:"payloadHex"`
		Hex        string `json:"hex"`
	} `json:"frames"`
	Windows []struct {
		SessionID string `json:"sessionId"`
		Credit    uint32 `json:"credit"`
		Hex       string `json:"hex"`
	} `json:"windows"`
	InvalidFrames []struct {
		Name  string `json:"name"`
		Hex   string `json:"hex"`
		Error string `json:"error"`
	} `json:"invalidFrames"`
	CloseCodes struct {
		NoToken  int `json:"noToken"`
		BadToken int `json:"badToken"`
		Redirect int `json:"redirect"`
	} `json:"closeCodes"`
	TunnelFailureReasons []string `json:"tunnelFailureReasons"`
	DeviceIDs            []struct {
		APIKey   string `json:"apiKey"`
		Name     string `json:"name"`
		DeviceID string `json:"deviceId"`
	} `json:"deviceIds"`
	ControlParse []struct {
		Name   string `json:"name"`
		Text   string `json:"text"`
		Parsed *struct {
			Type    string         `json:"type"`
			Payload map[string]any `json:"payload"`
		} `json:"parsed"`
	} `json:"controlParse"`
	ControlEncode []struct {
		Type    string         `json:"type"`
		Payload map[string]any `json:"payload"`
		JSON    string         `json:"json"`
	} `json:"controlEncode"`
	Messages        []messageVector `json:"messages"`
	InvalidMessages []messageVector `json:"invalidMessages"`
	DSL             struct {
		Valid []struct {
			Username string       `json:"username"`
			Parsed   RouteRequest `json:"parsed"`
		} `json:"valid"`
		Invalid []struct {
			Username string `json:"username"`
			Token    string `json:"token"`
		} `json:"invalid"`
	} `json:"dsl"`
}

// messageVector is one control message as sent, for the direction it travels.
type messageVector struct {
	Direction string `json:"direction"`
	Name      string `json:"name"`
	JSON      string `json:"json"`
}

func load(t *testing.T) vectors {
	t.Helper()
	data, err := os.ReadFile("../../shared/testdata/wire-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestProtocolVectorIsPresent(t *testing.T) {
	got, _ := EncodeFrame(FrameData, "abc", []byte{9, 8, 7})
	if hex.EncodeToString(got) != "0103616263090807" {
		t.Fatalf("PROTOCOL.md vector: got %x", got)
	}
	for _, f := range load(t).Frames {
		if f.Hex == "0103616263090807" {
			return
		}
	}
	t.Fatal("the shared vectors lack the PROTOCOL.md frame vector")
}

func TestFramesEncodeAndDecode(t *testing.T) {
	for _, f := range load(t).Frames {
		t.Run(f.Name, func(t *testing.T) {
			got, err := EncodeFrame(f.Type, f.SessionID, unhex(t, f.PayloadHex))
			if err != nil || hex.EncodeToString(got) != f.Hex {
				t.Fatalf("encode: got %x (%v), want %s", got, err, f.Hex)
			}
			d, err := DecodeFrame(unhex(t, f.Hex))
			if err != nil || d.Type != f.Type || d.SessionID != f.SessionID || hex.EncodeToString(d.Payload) != f.PayloadHex {
				t.Fatalf("decode: got %+v (%v)", d, err)
			}
		})
	}
}

func TestWindowUpdates(t *testing.T) {
	for _, w := range load(t).Windows {
		got, _ := EncodeWindow(w.SessionID, w.Credit)
		if hex.EncodeToString(got) != w.Hex {
			t.Fatalf("window %d: got %x want %s", w.Credit, got, w.Hex)
		}
		d, _ := DecodeFrame(got)
		if c, ok := WindowCredit(d); !ok || c != w.Credit {
			t.Fatalf("credit read back %d %v", c, ok)
		}
	}
}

func TestInvalidFramesAreRefused(t *testing.T) {
	for _, f := range load(t).InvalidFrames {
		_, err := DecodeFrame(unhex(t, f.Hex))
		if err == nil || err.Error() != f.Error {
			t.Fatalf("%s: got %v want %s", f.Name, err, f.Error)
		}
	}
	if _, err := DecodeFrame(make([]byte, MaxFrameBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
}

func TestCloseCodesAndReasons(t *testing.T) {
	v := load(t)
	if v.CloseCodes.NoToken != CloseNoToken || v.CloseCodes.BadToken != CloseBadToken || v.CloseCodes.Redirect != CloseRedirect {
		t.Fatalf("close codes differ: %+v", v.CloseCodes)
	}
	if !reflect.DeepEqual(v.TunnelFailureReasons, TunnelFailureReasons) {
		t.Fatalf("reasons differ: %v", v.TunnelFailureReasons)
	}
}

func TestDeviceIDDerivation(t *testing.T) {
	for _, d := range load(t).DeviceIDs {
		if got := DeviceID(d.APIKey, d.Name); got != d.DeviceID {
			t.Fatalf("%s:%s -> %s, want %s", d.APIKey, d.Name, got, d.DeviceID)
		}
	}
}

func TestControlParseNestedAndFlat(t *testing.T) {
	for _, c := range load(t).ControlParse {
		got, ok := ParseControl([]byte(c.Text))
		if c.Parsed == nil {
			if ok {
				t.Fatalf("%s: parsed %+v, want refusal", c.Name, got)
			}
			continue
		}
		if !ok || got.Type != c.Parsed.Type || !reflect.DeepEqual(got.Payload, c.Parsed.Payload) {
			t.Fatalf("%s: got %+v %v, want %+v", c.Name, got, ok, *c.Parsed)
		}
	}
}

func TestControlEncodeNested(t *testing.T) {
	for _, c := range load(t).ControlEncode {
		if got := string(EncodeControl(c.Type, c.Payload)); got != c.JSON {
			t.Fatalf("got %s want %s", got, c.JSON)
		}
	}
}

func TestDSLExamples(t *testing.T) {
	v := load(t)
	for _, d := range v.DSL.Valid {
		got, err := ParseUsername(d.Username)
		if err != nil || got != d.Parsed {
			t.Fatalf("%s: got %+v (%v), want %+v", d.Username, got, err, d.Parsed)
		}
		if back, err := ParseUsername(FormatUsername(got)); err != nil || back != got {
			t.Fatalf("%s: format round trip gave %+v (%v)", d.Username, back, err)
		}
	}
	for _, d := range v.DSL.Invalid {
		_, err := ParseUsername(d.Username)
		var ue *UsernameError
		if !errors.As(err, &ue) || ue.Token != d.Token {
			t.Fatalf("%s: got %v, want an error naming %q", d.Username, err, d.Token)
		}
	}
}

func TestEveryControlMessageTypeHasAVectorAndParses(t *testing.T) {
	v := load(t)
	seen := map[string]map[string]bool{"peerToRelay": {}, "relayToPeer": {}}
	for _, m := range v.Messages {
		t.Run(m.Direction+" "+m.Name, func(t *testing.T) {
			c, ok := ParseControl([]byte(m.JSON))
			if !ok {
				t.Fatalf("does not parse: %s", m.JSON)
			}
			seen[m.Direction][c.Type] = true
			switch m.Direction {
			case "relayToPeer":
				// What the Go peer reads from the relay: the fields it uses have their contract shape.
				if err := CheckRelayMessage(c); err != nil {
					t.Fatal(err)
				}
			case "peerToRelay":
				// What the Go peer sends: our encoder produces exactly the vector text.
				if got := string(EncodeControl(c.Type, c.Payload)); got != m.JSON {
					t.Fatalf("encode: got %s want %s", got, m.JSON)
				}
			default:
				t.Fatalf("unknown direction %q", m.Direction)
			}
		})
	}
	for dir, want := range map[string][]string{"peerToRelay": PeerToRelayTypes, "relayToPeer": RelayToPeerTypes} {
		got := make([]string, 0, len(seen[dir]))
		for typ := range seen[dir] {
			got = append(got, typ)
		}
		sort.Strings(got)
		w := append([]string(nil), want...)
		sort.Strings(w)
		if !reflect.DeepEqual(got, w) {
			t.Fatalf("%s: vectors cover %v, the Go peer knows %v", dir, got, w)
		}
	}
}

func TestMalformedRelayMessagesAreRefused(t *testing.T) {
	for _, m := range load(t).InvalidMessages {
		if m.Direction != "relayToPeer" {
			continue // the relay (TypeScript) checks these; shared/wire-vectors.test.ts pins them
		}
		c, ok := ParseControl([]byte(m.JSON))
		if !ok {
			t.Fatalf("%s: not even a control message", m.Name)
		}
		if CheckRelayMessage(c) == nil {
			t.Fatalf("%s: accepted %s", m.Name, m.JSON)
		}
	}
}
