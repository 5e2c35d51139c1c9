// Package peer is the Go peer: identity, N relay sockets, tunnels. It behaves like the
// TypeScript peer in peer-node/ (the reference) and speaks the wire of PROTOCOL.md section 2.
package peer

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"crypto/rand"
	"encoding/hex"
)

// SDKVersion is sent as sdkVersion at registration and in device_info.
const SDKVersion = "peerproxy-peer-go/0.1.0"

// DefaultAPIURL is the production API base.
const DefaultAPIURL = "https://api.peerproxy.dev"

// Config is every flag of the fleet guide plus the API base, the development flag for private
// targets and the relay allow-list.
type Config struct {
	APIKey         string
	Name           string
	NameWasRandom  bool
	Country        string
	Connections    int
	Wallet         string
	StateFile      string
	RelayURL       string // pinned relay; empty = the one the API assigns
	Verbose        bool
	APIURL         string
	AllowPrivate   bool
	RelayAllowlist []string
	Timing         Timing
}

// Timing holds the protocol's delays; production defaults, shortened only by tests.
type Timing struct {
	Backoff          BackoffPolicy
	Heartbeat        time.Duration
	ConnectTimeout   time.Duration
	RedirectCooldown time.Duration
	// FailoverAfterFailures connects in a row that never reached `connected` make the peer ask the
	// API for a relay (the `relay` of a refresh answer); FailoverCheck is the least gap between
	// the starts of two asks.
	FailoverAfterFailures int
	FailoverCheck         time.Duration
}

// DefaultTiming is PROTOCOL.md section 2: heartbeat 30 s, reconnect 5 s..120 s plus jitter
// (BackoffDelay), failover after 2 failed connects, at most one ask per 30 s.
func DefaultTiming() Timing {
	return Timing{
		Backoff:               DefaultBackoff,
		Heartbeat:             30 * time.Second,
		ConnectTimeout:        10 * time.Second,
		RedirectCooldown:      60 * time.Second,
		FailoverAfterFailures: 2,
		FailoverCheck:         30 * time.Second,
	}
}

// DefaultStateFile is ~/.peerproxy-peer-state.json.
func DefaultStateFile() string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, ".peerproxy-peer-state.json")
}

type flagSpec struct {
	flag, env, accepts string
	alias              string // an older env name also read (the TS peer's)
	isBool             bool
}

// Flags lists flag, env var and what is accepted, in the guide's order; usage is built from it.
var Flags = []flagSpec{
	{flag: "key", env: "API_KEY", accepts: "required, your psx_ API key"},
	{flag: "name", env: "AGENT_NAME", accepts: "1-64 characters (default: random)"},
	{flag: "country", env: "COUNTRY", accepts: "ISO-2 country hint (default US)"},
	{flag: "connections", env: "WS_CONNECTIONS", accepts: "an integer 1-8 (default 4)"},
	{flag: "wallet", env: "WALLET", accepts: "payout wallet address (optional)"},
	{flag: "state", env: "PEER_STATE_FILE", accepts: "path (default ~/.peerproxy-peer-state.json)"},
	{flag: "relay", env: "RELAY_URL", accepts: "pin a relay ws:// or wss:// URL"},
	{flag: "verbose", env: "VERBOSE", accepts: "true or false", isBool: true},
	{flag: "api", env: "API_BASE", alias: "PEER_API_URL", accepts: "API base URL (default " + DefaultAPIURL + ")"},
	{flag: "allow-private", env: "PEER_ALLOW_PRIVATE_TARGETS", accepts: "true or false; development only: allow loopback/private targets", isBool: true},
	{flag: "relay-allow", env: "RELAY_ALLOWLIST", accepts: "comma-separated relay hosts/domains a redirect may go to"},
}

// Usage is the -help text.
func Usage() string {
	var b strings.Builder
	b.WriteString("usage: peerproxy-peer -key=psx_... -name=rig-001 [flags]\n\n  flag            env\n")
	for _, f := range Flags {
		fmt.Fprintf(&b, "  -%-14s %-27s %s\n", f.flag, f.env, f.accepts)
	}
	return b.String()
}

// ErrHelp is returned by ParseArgs for -h/-help.
var ErrHelp = flag.ErrHelp

// UsageError is a bad flag or value; the CLI exits 2 with its message and the usage.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

type boolFlag struct {
	set   bool
	value string
}

func (b *boolFlag) String() string     { return b.value }
func (b *boolFlag) Set(v string) error { b.value, b.set = v, true; return nil }
func (b *boolFlag) IsBoolFlag() bool   { return true }

type strFlag struct {
	set   bool
	value string
}

func (s *strFlag) String() string     { return s.value }
func (s *strFlag) Set(v string) error { s.value, s.set = v, true; return nil }

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes":
		return true, true
	case "false", "0", "no", "":
		return false, true
	}
	return false, false
}

var (
	apiKeyRE   = regexp.MustCompile(`^psx_[A-Za-z0-9_-]+$`)
	countryRE  = regexp.MustCompile(`^[A-Za-z]{2}$`)
	allowRE    = regexp.MustCompile(`^[A-Za-z0-9.:-]+$`)
	wsURLRE    = regexp.MustCompile(`^wss?://`)
	httpURLRE  = regexp.MustCompile(`^https?://`)
	trailSlash = regexp.MustCompile(`/+$`)
)

// ParseArgs reads flags over the environment (a flag beats its env var). Go's flag syntax:
// -flag=value, --flag=value, -flag value; booleans take no separate value.
func ParseArgs(args []string, getenv func(string) string) (Config, error) {
	fs := flag.NewFlagSet("peerproxy-peer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	values := map[string]flag.Value{}
	for _, f := range Flags {
		if f.isBool {
			v := &boolFlag{}
			values[f.flag] = v
			fs.Var(v, f.flag, f.accepts)
		} else {
			v := &strFlag{}
			values[f.flag] = v
			fs.Var(v, f.flag, f.accepts)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, ErrHelp
		}
		return Config{}, &UsageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return Config{}, &UsageError{fmt.Sprintf("unexpected argument %q; flags look like -key=psx_... (try -help)", fs.Arg(0))}
	}
	// raw value and where it came from, per flag
	raw := map[string]string{}
	source := map[string]string{}
	for _, f := range Flags {
		set := false
		val := ""
		switch v := values[f.flag].(type) {
		case *boolFlag:
			set, val = v.set, v.value
		case *strFlag:
			set, val = v.set, v.value
		}
		if set {
			raw[f.flag], source[f.flag] = val, "-"+f.flag
			continue
		}
		for _, env := range []string{f.env, f.alias} {
			if env == "" {
				continue
			}
			if e := getenv(env); e != "" {
				raw[f.flag], source[f.flag] = e, env
				break
			}
		}
	}
	bad := func(name string) error {
		var spec flagSpec
		for _, f := range Flags {
			if f.flag == name {
				spec = f
			}
		}
		shown := strconv.Quote(raw[name])
		if name == "key" {
			shown = "(hidden)"
		}
		from := source[name]
		other := "-" + spec.flag
		if strings.HasPrefix(from, "-") {
			other = spec.env
		}
		return &UsageError{fmt.Sprintf("invalid value %s for %s (%s): accepted: %s", shown, from, other, spec.accepts)}
	}

	cfg := Config{
		Country:     "US",
		Connections: 4,
		StateFile:   DefaultStateFile(),
		APIURL:      DefaultAPIURL,
		Timing:      DefaultTiming(),
	}
	key, ok := raw["key"]
	if !ok {
		return Config{}, &UsageError{"missing API key: set -key=psx_... or API_KEY (your psx_ API key)"}
	}
	if !apiKeyRE.MatchString(key) {
		return Config{}, bad("key")
	}
	cfg.APIKey = key
	if v, ok := raw["name"]; ok {
		if len(v) < 1 || len(v) > 64 {
			return Config{}, bad("name")
		}
		cfg.Name = v
	}
	if v, ok := raw["country"]; ok {
		if !countryRE.MatchString(v) {
			return Config{}, bad("country")
		}
		cfg.Country = strings.ToUpper(v)
	}
	if v, ok := raw["connections"]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > 8 {
			return Config{}, bad("connections")
		}
		cfg.Connections = n
	}
	if v, ok := raw["wallet"]; ok {
		cfg.Wallet = v
	}
	if v, ok := raw["state"]; ok {
		cfg.StateFile = v
	}
	if v, ok := raw["relay"]; ok {
		if u, err := url.Parse(v); err != nil || !wsURLRE.MatchString(v) || u.Host == "" {
			return Config{}, bad("relay")
		}
		cfg.RelayURL = v
	}
	for name, dst := range map[string]*bool{"verbose": &cfg.Verbose, "allow-private": &cfg.AllowPrivate} {
		if v, ok := raw[name]; ok {
			b, valid := parseBool(v)
			if !valid {
				return Config{}, bad(name)
			}
			*dst = b
		}
	}
	if v, ok := raw["api"]; ok {
		if u, err := url.Parse(v); err != nil || !httpURLRE.MatchString(v) || u.Host == "" {
			return Config{}, bad("api")
		}
		cfg.APIURL = trailSlash.ReplaceAllString(v, "")
	}
	if v, ok := raw["relay-allow"]; ok {
		for _, h := range strings.Split(v, ",") {
			h = strings.TrimSpace(h)
			if h == "" {
				continue
			}
			if !allowRE.MatchString(h) {
				return Config{}, bad("relay-allow")
			}
			cfg.RelayAllowlist = append(cfg.RelayAllowlist, h)
		}
	}
	if cfg.Name == "" {
		cfg.Name, cfg.NameWasRandom = RandomName(), true
	}
	// Test knob, not a fleet setting: scales the reconnect timing (base, 24x ceiling, 0.4x jitter,
	// 6x failover check interval: the 5 s / 120 s / 2 s / 30 s shape) so end-to-end tests do not
	// wait for production delays.
	if v := getenv("PEER_RECONNECT_BASE_MS"); v != "" {
		base, err := strconv.Atoi(v)
		if err != nil || base < 10 || base > 60000 {
			return Config{}, &UsageError{fmt.Sprintf("invalid value %q for PEER_RECONNECT_BASE_MS: accepted: an integer 10-60000", v)}
		}
		b := time.Duration(base) * time.Millisecond
		cfg.Timing.Backoff = BackoffPolicy{Base: b, Max: 24 * b, Jitter: b * 4 / 10, Stable: DefaultBackoff.Stable}
		cfg.Timing.FailoverCheck = 6 * b
	}
	return cfg, nil
}

// RandomName is the guide's random default; the CLI warns that fleets need stable names.
func RandomName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "peer-" + hex.EncodeToString(b[:])
}

// RandomNameWarning is printed when no name was given.
const RandomNameWarning = "no -name/AGENT_NAME set, using a random name. Every restart without the saved state file becomes a NEW " +
	"device: fleets MUST give each instance a stable, unique name (e.g. -name=rig-001) and persist -state."
