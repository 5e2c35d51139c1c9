/**
 * The addresses no exit may be asked to reach: loopback, private, CGNAT, link-local (cloud metadata),
 * multicast, reserved, documentation and the like, IPv4 inside IPv6 included. One list for the
 * gateway (customers' targets) and the peer SDK (its own egress check), so they cannot drift.
 * Node built-ins only: the peer package compiles this file into its own build.
 */
import { BlockList, isIP } from "node:net";

const blocked = new BlockList();
// IPv4: "this network", RFC 1918, CGNAT, loopback, link-local (metadata 169.254.169.254), IETF
// protocol assignments, documentation nets, 6to4 relay anycast, benchmarking, multicast, reserved
// and broadcast.
for (const [net, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.88.99.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const)
  blocked.addSubnet(net, prefix, "ipv4");
// IPv6: IPv4-compatible/unspecified/loopback ::/96, discard 100::/64, IETF assignments 2001::/23
// (Teredo, ORCHID), documentation, local-use NAT64 64:ff9b:1::/48, unique-local fc00::/7 (the AWS
// metadata fd00:ec2::254), link-local fe80::/10, deprecated site-local fec0::/10, multicast.
for (const [net, prefix] of [
  ["::", 96],
  ["100::", 64],
  ["2001::", 23],
  ["2001:db8::", 32],
  ["64:ff9b:1::", 48],
  ["fc00::", 7],
  ["fe80::", 10],
  ["fec0::", 10],
  ["ff00::", 8],
] as const)
  blocked.addSubnet(net, prefix, "ipv6");

/** Eight 16-bit groups of an IPv6 literal (`::` and a trailing dotted quad handled); undefined if malformed. */
export function ipv6Groups(address: string): number[] | undefined {
  let text = address.split("%")[0]!.toLowerCase();
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const b = dotted[1]!.split(".").map(Number);
    text = `${text.slice(0, dotted.index)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = text.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = text.includes("::") ? 8 - h.length - t.length : 0;
  const groups = [...h, ...Array<string>(Math.max(0, fill)).fill("0"), ...t].map((g) =>
    /^[0-9a-f]{1,4}$/.test(g) ? Number.parseInt(g, 16) : Number.NaN,
  );
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : undefined;
}

const quad = (hi: number, lo: number) => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;

/**
 * The IPv4 address an IPv6 address carries: IPv4-mapped ::ffff:0:0/96 (`mapped`: it IS that IPv4
 * address on the wire), NAT64 64:ff9b::/96 and 6to4 2002::/16 (routed to it).
 */
export function embeddedIpv4(g: number[]): { v4: string; mapped: boolean } | undefined {
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zeros(0, 5) && g[5] === 0xffff) return { v4: quad(g[6] ?? 0, g[7] ?? 0), mapped: true };
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6))
    return { v4: quad(g[6] ?? 0, g[7] ?? 0), mapped: false };
  if (g[0] === 0x2002) return { v4: quad(g[1] ?? 0, g[2] ?? 0), mapped: false };
  return undefined;
}

/** True when no exit may connect to this IP literal. Anything that is not an IP literal counts as blocked. */
export function isBlockedAddress(address: string): boolean {
  const bare = address.split("%")[0]!;
  const family = isIP(bare);
  if (family === 4) return blocked.check(bare, "ipv4");
  if (family !== 6) return true;
  const groups = ipv6Groups(bare);
  if (!groups) return true;
  const inner = embeddedIpv4(groups);
  if (inner && blocked.check(inner.v4, "ipv4")) return true;
  return blocked.check(bare, "ipv6");
}
