package peer

import (
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// RedirectContext is what decides whether to follow a relay_redirect (PROTOCOL.md section 2).
type RedirectContext struct {
	Pinned         bool     // -relay/RELAY_URL set: the operator chose, the server may not move us
	Allowlist      []string // hosts or parent domains a redirect may go to
	CurrentRelay   string
	LastRedirectAt time.Time // zero if none
	Now            time.Time
	Cooldown       time.Duration // anti-flap gap between two followed redirects (60 s)
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(u.Hostname(), "["), "]"))
}

// RelayDomain is the default allow-list entry for a relay URL: the last two labels of a name
// with three or more (`eu.relay.peerproxy.dev` -> `peerproxy.dev`); an IP literal or a shorter
// name stands for itself. Without a public-suffix list, pass -relay-allow for `example.co.uk`.
func RelayDomain(relayURL string) string {
	host := hostOf(relayURL)
	if _, err := netip.ParseAddr(host); host == "" || err == nil {
		return host
	}
	labels := strings.Split(host, ".")
	if len(labels) <= 2 {
		return host
	}
	return strings.Join(labels[len(labels)-2:], ".")
}

func sameRelay(a, b string) bool {
	ua, errA := url.Parse(a)
	ub, errB := url.Parse(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host) &&
		strings.TrimSuffix(ua.Path, "/") == strings.TrimSuffix(ub.Path, "/")
}

// DecideRedirect says whether to follow; when not, why.
func DecideRedirect(target any, c RedirectContext) (follow bool, why string) {
	if c.Pinned {
		return false, "relay pinned by configuration"
	}
	s, isString := target.(string)
	u, err := url.Parse(s)
	if !isString || !wsURLRE.MatchString(s) || err != nil || u.Host == "" {
		return false, "target is not a ws:// or wss:// URL"
	}
	host := hostOf(s)
	allowed := false
	for _, entry := range c.Allowlist {
		e := strings.TrimPrefix(strings.ToLower(entry), ".")
		if host == e || strings.HasSuffix(host, "."+e) {
			allowed = true
		}
	}
	if !allowed {
		return false, "host " + host + " not on the relay allow-list"
	}
	if sameRelay(s, c.CurrentRelay) {
		return false, "already on that relay"
	}
	if !c.LastRedirectAt.IsZero() && c.Now.Sub(c.LastRedirectAt) <= c.Cooldown {
		return false, "last redirect too recent"
	}
	return true, ""
}
