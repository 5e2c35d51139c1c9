package peer

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// State is what a peer persists between runs (PROTOCOL.md section 1): enough to resume the device.
type State struct {
	DeviceID     string `json:"deviceId"`
	RefreshToken string `json:"refreshToken"`
	Relay        string `json:"relay"`
}

// ReadState returns the saved state, or nil when the file is missing or unreadable (then we register).
func ReadState(path string) *State {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var s State
	if json.Unmarshal(data, &s) != nil || s.DeviceID == "" || s.RefreshToken == "" || s.Relay == "" {
		return nil
	}
	return &s
}

// WriteState writes atomically (temp file beside the target, fsync, rename) with mode 0600: a
// crash leaves the old or the new file, never a torn one, and the refresh token is a credential.
func WriteState(path string, s State) error {
	if err := writeAtomically(path, s); err != nil {
		return fmt.Errorf("cannot write state file %s: %w", path, err)
	}
	return nil
}

func writeAtomically(path string, s State) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	tmp := fmt.Sprintf("%s.%d.%s.tmp", path, os.Getpid(), hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	data, _ := json.MarshalIndent(s, "", "  ")
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
