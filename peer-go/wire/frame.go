// Package wire holds what the Go peer shares with every other party on the relay wire
// (PROTOCOL.md section 2): binary-v1 frames, control messages, close codes, the deviceId
// derivation and the customer username DSL. shared/testdata/wire-vectors.json pins it to the
// TypeScript implementation in shared/.
package wire

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"
)

// Frame type bytes. 0x02 and 0x04 are flow-v1 (ours): end of stream in one direction and window update.
const (
	FrameData   byte = 0x01
	FrameEnd    byte = 0x02
	FrameClose  byte = 0x03
	FrameWindow byte = 0x04
)

const (
	// MaxFrameBytes: a larger WebSocket message closes the socket.
	MaxFrameBytes = 4 * 1024 * 1024
	// InitialWindow is the flow-v1 credit per session, each way.
	InitialWindow = 256 * 1024
	// DataFrameBytes bounds the data frames we send (same as the TS peer's dataFrames default).
	DataFrameBytes = 64 * 1024
)

// Frame is one decoded binary-v1 message. Payload aliases the input buffer.
type Frame struct {
	Type      byte
	SessionID string
	Payload   []byte
}

// Decode errors; the names match shared/frame.ts's DecodeResult errors.
var (
	ErrTooShort         = errors.New("too_short")
	ErrBadSessionLength = errors.New("bad_session_length")
	ErrTooLarge         = errors.New("too_large")
	ErrBadSessionID     = errors.New("bad_session_id")
)

// EncodeFrame frames one message; it fails on an empty or over-long (>255 bytes) sessionId.
func EncodeFrame(typ byte, sessionID string, payload []byte) ([]byte, error) {
	if len(sessionID) < 1 || len(sessionID) > 255 {
		return nil, ErrBadSessionLength
	}
	out := make([]byte, 2+len(sessionID)+len(payload))
	out[0] = typ
	out[1] = byte(len(sessionID))
	copy(out[2:], sessionID)
	copy(out[2+len(sessionID):], payload)
	return out, nil
}

// EncodeWindow is a flow-v1 window update granting `credit` further bytes for the session.
func EncodeWindow(sessionID string, credit uint32) ([]byte, error) {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], credit)
	return EncodeFrame(FrameWindow, sessionID, p[:])
}

// DecodeFrame parses one WebSocket binary message. Unknown type bytes parse fine; callers ignore them.
func DecodeFrame(buf []byte) (Frame, error) {
	if len(buf) > MaxFrameBytes {
		return Frame{}, ErrTooLarge
	}
	if len(buf) < 2 {
		return Frame{}, ErrTooShort
	}
	n := int(buf[1])
	if n == 0 {
		return Frame{}, ErrBadSessionLength
	}
	if len(buf) < 2+n {
		return Frame{}, ErrTooShort
	}
	sid := buf[2 : 2+n]
	if !utf8.Valid(sid) {
		return Frame{}, ErrBadSessionID
	}
	return Frame{Type: buf[0], SessionID: string(sid), Payload: buf[2+n:]}, nil
}

// WindowCredit reads a window update's credit; ok is false unless the payload is exactly 4 bytes.
func WindowCredit(f Frame) (credit uint32, ok bool) {
	if len(f.Payload) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(f.Payload), true
}
