package peer

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFlagsBeatEnvAndDefaultsFollowTheGuide(t *testing.T) {
	cfg, err := ParseArgs([]string{"-key=psx_flag", "-connections", "2", "-verbose"}, env(map[string]string{
		"API_KEY": "psx_env", "AGENT_NAME": "rig-001", "WS_CONNECTIONS": "6", "API_BASE": "http://127.0.0.1:1/",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIKey != "psx_flag" || cfg.Name != "rig-001" || cfg.Connections != 2 || !cfg.Verbose || cfg.Country != "US" {
		t.Fatalf("got %+v", cfg)
	}
	if cfg.APIURL != "http://127.0.0.1:1" {
		t.Fatalf("api base keeps no trailing slash: %q", cfg.APIURL)
	}
	if cfg.Timing.Heartbeat != 30*time.Second || cfg.Timing.Backoff != DefaultBackoff {
		t.Fatalf("timing %+v", cfg.Timing)
	}
}

func TestBadFlagsNameTheFlagAndTheEnvVar(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-key=psx_a", "-connections=0"}, nil, `invalid value "0" for -connections (WS_CONNECTIONS)`},
		{[]string{"-key=psx_a"}, map[string]string{"WS_CONNECTIONS": "nine"}, `for WS_CONNECTIONS (-connections)`},
		{[]string{"-key=psx_a", "-country=USA"}, nil, "-country (COUNTRY)"},
		{[]string{"-key=psx_a", "-relay=http://x"}, nil, "-relay (RELAY_URL)"},
		{[]string{"-key=psx_a", "-api=ftp://x"}, nil, "-api (API_BASE)"},
		{[]string{"-key=nope"}, nil, "(hidden) for -key (API_KEY)"},
		{[]string{}, nil, "missing API key"},
		{[]string{"-key=psx_a", "-wat"}, nil, "-wat"},
		{[]string{"-key=psx_a"}, map[string]string{"VERBOSE": "maybe"}, "VERBOSE (-verbose)"},
	}
	for _, c := range cases {
		_, err := ParseArgs(c.args, env(c.env))
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: got %v, want a usage error containing %q", c.args, c.env, err, c.want)
		}
	}
}

func TestARandomNameIsFlagged(t *testing.T) {
	cfg, err := ParseArgs([]string{"-key=psx_a"}, env(nil))
	if err != nil || !cfg.NameWasRandom || !strings.HasPrefix(cfg.Name, "peer-") {
		t.Fatalf("%+v %v", cfg, err)
	}
}

func TestBackoffDoublesToTheCeilingAndResetsAfterAStableMinute(t *testing.T) {
	b := &Backoff{Policy: DefaultBackoff, random: func() float64 { return 0.5 }}
	// half of max(2 s, delay/2) on top after the first attempt (the jitter grows with the delay)
	want := []time.Duration{6000, 12500, 25000, 50000, 100000, 150000, 150000}
	for i, w := range want {
		if got := b.Next(0); got != w*time.Millisecond {
			t.Fatalf("attempt %d: %v want %v", i, got, w*time.Millisecond)
		}
	}
	if got := b.Next(time.Minute); got != 6*time.Second {
		t.Fatalf("after a stable minute: %v", got)
	}
}

func TestBlockedAddresses(t *testing.T) {
	blocked := []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
		"0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fd00::1", "fe80::1%eth0", "ff02::1",
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "::7f00:1", "not-an-ip"}
	for _, a := range blocked {
		if !IsBlockedAddress(a) {
			t.Errorf("%s should be blocked", a)
		}
	}
	for _, a := range []string{"1.1.1.1", "203.0.113.7", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"} {
		if IsBlockedAddress(a) {
			t.Errorf("%s should be allowed", a)
		}
	}
}

type stubResolver map[string][]string

func (s stubResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range s[host] {
		out = append(out, netip.MustParseAddr(a))
	}
	if out == nil {
		return nil, errors.New("no such host")
	}
	return out, nil
}

func TestResolveTargetChecksTheResolvedAddress(t *testing.T) {
	r := stubResolver{"rebind.example": {"127.0.0.1"}, "mixed.example": {"10.0.0.1", "203.0.113.9"}}
	ctx := context.Background()
	var te *TargetError
	if _, err := ResolveTarget(ctx, r, "rebind.example", false); !errors.As(err, &te) || te.Reason != "blocked_target" {
		t.Fatalf("rebind: %v", err)
	}
	if a, err := ResolveTarget(ctx, r, "mixed.example", false); err != nil || a.String() != "203.0.113.9" {
		t.Fatalf("mixed: %v %v", a, err)
	}
	if a, err := ResolveTarget(ctx, r, "rebind.example", true); err != nil || a.String() != "127.0.0.1" {
		t.Fatalf("allow-private: %v %v", a, err)
	}
	if _, err := ResolveTarget(ctx, r, "[::1]", false); !errors.As(err, &te) || te.Reason != "blocked_target" {
		t.Fatalf("literal: %v", err)
	}
	if _, err := ResolveTarget(ctx, r, "missing.example", false); !errors.As(err, &te) || te.Reason != "dns_failed" {
		t.Fatalf("missing: %v", err)
	}
}

func TestRedirectRules(t *testing.T) {
	now := time.Now()
	base := RedirectContext{Allowlist: []string{RelayDomain("wss://us.relay.peerproxy.dev")}, CurrentRelay: "wss://us.relay.peerproxy.dev", Now: now, Cooldown: time.Minute}
	if RelayDomain("wss://us.relay.peerproxy.dev") != "peerproxy.dev" || RelayDomain("ws://127.0.0.1:8080") != "127.0.0.1" {
		t.Fatal("relay domain")
	}
	cases := []struct {
		name   string
		target any
		mod    func(*RedirectContext)
		follow bool
	}{
		{"sibling relay", "wss://eu.relay.peerproxy.dev", nil, true},
		{"pinned", "wss://eu.relay.peerproxy.dev", func(c *RedirectContext) { c.Pinned = true }, false},
		{"foreign host", "wss://evil.example", nil, false},
		{"suffix trick", "wss://peerproxy.dev.evil.example", nil, false},
		{"not ws", "https://eu.relay.peerproxy.dev", nil, false},
		{"not a string", 42, nil, false},
		{"same relay", "wss://us.relay.peerproxy.dev/", nil, false},
		{"too soon", "wss://eu.relay.peerproxy.dev", func(c *RedirectContext) { c.LastRedirectAt = now.Add(-30 * time.Second) }, false},
		{"after the cooldown", "wss://eu.relay.peerproxy.dev", func(c *RedirectContext) { c.LastRedirectAt = now.Add(-61 * time.Second) }, true},
	}
	for _, c := range cases {
		ctx := base
		if c.mod != nil {
			c.mod(&ctx)
		}
		if follow, why := DecideRedirect(c.target, ctx); follow != c.follow {
			t.Errorf("%s: follow=%v (%s)", c.name, follow, why)
		}
	}
}

func TestStateIsWrittenAtomicallyWithMode0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	if ReadState(path) != nil {
		t.Fatal("missing file reads as nil")
	}
	s := State{DeviceID: "agent_0123456789abcdef", RefreshToken: "rt", Relay: "ws://127.0.0.1:1"}
	if err := WriteState(path, s); err != nil {
		t.Fatal(err)
	}
	if got := ReadState(path); got == nil || *got != s {
		t.Fatalf("read back %+v", got)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", info.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
}
