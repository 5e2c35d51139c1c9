import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";

/**
 * Egress safety: a peer shares its uplink, not its LAN. Targets are checked on the address they
 * RESOLVE to and the TCP connect then goes to that very address, so a name that answers public
 * at check time and private at connect time (DNS rebinding) cannot slip through.
 */

const blocked = new BlockList();
// IPv4: "this network"/unspecified, RFC 1918, CGNAT, loopback, link-local (cloud metadata
// 169.254.169.254), IETF protocol assignments, multicast, reserved and broadcast.
for (const [net, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const)
  blocked.addSubnet(net, prefix, "ipv4");
// IPv6: unspecified, loopback, unique-local fc00::/7, link-local fe80::/10, multicast ff00::/8.
blocked.addAddress("::", "ipv6");
blocked.addAddress("::1", "ipv6");
blocked.addSubnet("fc00::", 7, "ipv6");
blocked.addSubnet("fe80::", 10, "ipv6");
blocked.addSubnet("ff00::", 8, "ipv6");

/** Expands an IPv6 literal into eight 16-bit groups (handles `::` and a trailing dotted quad). */
function ipv6Groups(addr: string): number[] | undefined {
  let text = addr.split("%")[0]!.toLowerCase();
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const b = quad[1]!.split(".").map(Number);
    const hi = ((b[0]! << 8) | b[1]!).toString(16);
    const lo = ((b[2]! << 8) | b[3]!).toString(16);
    text = `${text.slice(0, quad.index)}${hi}:${lo}`;
  }
  const [head, tail] = text.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = text.includes("::") ? 8 - h.length - t.length : 0;
  const groups = [...h, ...Array<string>(fill).fill("0"), ...t].map((g) => Number.parseInt(g, 16));
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : undefined;
}

/** The IPv4 address carried inside an IPv4-mapped (::ffff:a.b.c.d), -compatible (::a.b.c.d) or NAT64 (64:ff9b::/96) IPv6 address. */
function embeddedIpv4(groups: number[]): string | undefined {
  const top = groups.slice(0, 5).every((g) => g === 0);
  const mapped = top && groups[5] === 0xffff;
  const compatible = top && groups[5] === 0 && (groups[6]! !== 0 || groups[7]! > 1);
  const nat64 = groups[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((g) => g === 0);
  if (!mapped && !compatible && !nat64) return undefined;
  const hi = groups[6]!;
  const lo = groups[7]!;
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

/** True when a peer must not connect to this IP literal. Anything unparsable counts as blocked. */
export function isBlockedAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, "ipv4");
  if (family !== 6) return true;
  const groups = ipv6Groups(address);
  if (!groups) return true;
  const v4 = embeddedIpv4(groups);
  if (v4 !== undefined) return blocked.check(v4, "ipv4");
  return blocked.check(address.split("%")[0]!, "ipv6");
}

export type ResolveResult =
  | { ok: true; address: string; family: 4 | 6 }
  | { ok: false; reason: "blocked_target" | "dns_failed"; detail: string };

export type Lookup = (host: string) => Promise<{ address: string; family: number }[]>;

const systemLookup: Lookup = (host) => lookup(host, { all: true, verbatim: true });

/**
 * Resolves `host` and picks the address to connect to. With `allowPrivate` (the development flag)
 * nothing is refused; otherwise the first resolved address outside the blocked ranges, and
 * blocked_target when there is none.
 */
export async function resolveTarget(
  host: string,
  opts: { allowPrivate: boolean; lookup?: Lookup },
): Promise<ResolveResult> {
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  let addrs: { address: string; family: number }[];
  if (isIP(bare)) addrs = [{ address: bare, family: isIP(bare) }];
  else {
    try {
      addrs = await (opts.lookup ?? systemLookup)(bare);
    } catch (err) {
      return { ok: false, reason: "dns_failed", detail: (err as NodeJS.ErrnoException).code ?? String(err) };
    }
    if (addrs.length === 0) return { ok: false, reason: "dns_failed", detail: "no addresses" };
  }
  const usable = opts.allowPrivate ? addrs : addrs.filter((a) => !isBlockedAddress(a.address));
  const pick = usable[0];
  if (!pick)
    return { ok: false, reason: "blocked_target", detail: `${bare} resolves to a non-public address` };
  return { ok: true, address: pick.address, family: pick.family === 6 ? 6 : 4 };
}
