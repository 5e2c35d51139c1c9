package peer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
)

// Egress safety: a peer shares its uplink, not its LAN. Targets are checked on the address they
// RESOLVE to and the TCP connect then goes to that very address, so a name that answers public at
// check time and private at connect time (DNS rebinding) cannot slip through. Same ranges as
// peer-node/src/egress.ts.
var blockedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		// IPv4: "this network", RFC 1918, CGNAT, loopback, link-local (cloud metadata
		// 169.254.169.254), IETF protocol assignments, benchmarking, multicast, reserved, broadcast.
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
		// IPv6: unspecified, loopback, unique-local, link-local, multicast.
		"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// embeddedIPv4 is the IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), -compatible
// (::a.b.c.d) or NAT64 (64:ff9b::/96) IPv6 address.
func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if a.Is4In6() {
		return a.Unmap(), true
	}
	b := a.As16()
	top := true
	for _, x := range b[:10] {
		if x != 0 {
			top = false
		}
	}
	low := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	compatible := top && b[10] == 0 && b[11] == 0 && (b[12]|b[13] != 0 || b[14] != 0 || b[15] > 1)
	if compatible || nat64.Contains(a) {
		return low, true
	}
	return netip.Addr{}, false
}

// IsBlockedAddress is true when a peer must not connect to this IP literal; unparsable counts as blocked.
func IsBlockedAddress(address string) bool {
	a, err := netip.ParseAddr(address)
	if err != nil {
		return true
	}
	return isBlocked(a)
}

func isBlocked(a netip.Addr) bool {
	a = a.WithZone("")
	if a.Is6() {
		if v4, ok := embeddedIPv4(a); ok {
			a = v4
		}
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolver looks names up; net.DefaultResolver in production, a stub in tests.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// TargetError is a refused or unresolvable target with its tunnel_open_failed reason.
type TargetError struct{ Reason, Detail string }

func (e *TargetError) Error() string { return e.Reason + ": " + e.Detail }

// ResolveTarget picks the address to connect to: with allowPrivate (the development flag) the
// first resolved one, otherwise the first outside the blocked ranges, else blocked_target.
func ResolveTarget(ctx context.Context, r Resolver, host string, allowPrivate bool) (netip.Addr, error) {
	bare := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(bare); err == nil {
		addrs = []netip.Addr{a}
	} else {
		found, err := r.LookupNetIP(ctx, "ip", bare)
		if err != nil {
			detail := err.Error()
			var dnsErr *net.DNSError
			if errors.As(err, &dnsErr) {
				if dnsErr.IsTimeout || errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return netip.Addr{}, &TargetError{"timeout", "dns lookup timed out"}
				}
				if dnsErr.IsNotFound {
					detail = "ENOTFOUND"
				}
			} else if errors.Is(err, context.DeadlineExceeded) {
				return netip.Addr{}, &TargetError{"timeout", "dns lookup timed out"}
			}
			return netip.Addr{}, &TargetError{"dns_failed", detail}
		}
		if len(found) == 0 {
			return netip.Addr{}, &TargetError{"dns_failed", "no addresses"}
		}
		addrs = found
	}
	for _, a := range addrs {
		if allowPrivate || !isBlocked(a) {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, &TargetError{"blocked_target", bare + " resolves to a non-public address"}
}
