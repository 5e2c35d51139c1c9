/**
 * Which targets a customer may reach (issue 16 item 3). Every target is normalized once, the way the
 * exits' own parsers would read it (WHATWG URL for IPv4 shorthands such as 127.1, 0x7f000001,
 * 017700000001 or 2130706433; compressed IPv6; IPv4 inside IPv6; trailing dots; zone ids), and the
 * normalized form is what is checked and what is sent to the exit. Names are resolved here for
 * exits that cannot check targets themselves (modems: their proxy resolves and dials whatever it
 * gets), and the checked address is what the modem is asked to dial, so DNS rebinding cannot slip
 * between check and connect. Peers resolve and check on their side (peer-node/src/egress.ts).
 */
import { isIP } from "node:net";
import { embeddedIpv4, ipv6Groups, isBlockedAddress } from "../shared/blocked-addresses.ts";
import { GatewayError } from "./errors.ts";

// The ranges themselves live in shared/blocked-addresses.ts, shared with the peer SDK.
export { isBlockedAddress };

export interface Target {
  host: string;
  port: number;
}

/** A target after normalization: an IP literal in canonical form, or a lowercased name without trailing dots. */
export type NormalizedHost =
  | { kind: "ip"; address: string; family: 4 | 6 }
  | { kind: "name"; name: string }
  | { kind: "scoped" }
  | { kind: "invalid" };

/** `host:port` entries (port "*" for any) of GATEWAY_TARGET_HOSTS, hosts normalized. */
export type TargetAllowList = ReadonlySet<string>;

export interface TargetPolicy {
  /** development only (GATEWAY_ALLOW_PRIVATE_TARGETS): loopback targets pass; nothing else private does */
  allowLoopback: boolean;
  /** when set, only these host:port pairs; they are trusted as written (may be loopback) */
  allowList: TargetAllowList | null;
}

const LOOPBACK_NAMES = /^(localhost|.+\.localhost)$/;
// Names that only mean something inside a network: never sent to an exit.
const PRIVATE_NAMES = /(^|\.)(localhost|internal|local|localdomain|home\.arpa|intranet|lan|corp)$/;
const NAME_RE = /^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/** Reads a target host the way exits would: brackets off, case folded, IPv4 shorthands expanded, IPv6 compressed. */
export function normalizeHost(raw: string): NormalizedHost {
  let h = raw.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (!h || h.length > 255) return { kind: "invalid" };
  // A zone id (fe80::1%eth0, or %25 as in URIs) scopes an address to one of the exit's interfaces.
  if (h.includes("%")) return { kind: "scoped" };
  if (h.includes(":")) {
    let canonical: string;
    try {
      canonical = new URL(`http://[${h}]/`).hostname.slice(1, -1);
    } catch {
      return { kind: "invalid" };
    }
    const groups = ipv6Groups(canonical);
    const inner = groups && embeddedIpv4(groups);
    // ::ffff:a.b.c.d is an IPv4 address on the wire: check and send it as one.
    if (inner?.mapped) return { kind: "ip", address: inner.v4, family: 4 };
    return { kind: "ip", address: canonical, family: 6 };
  }
  let parsed: string;
  try {
    parsed = new URL(`http://${h}/`).hostname;
  } catch {
    return { kind: "invalid" };
  }
  if (isIP(parsed) === 4) return { kind: "ip", address: parsed, family: 4 };
  const name = parsed.replace(/\.+$/, "");
  if (!NAME_RE.test(name)) return { kind: "invalid" };
  return { kind: "name", name };
}

function isLoopbackAddress(address: string): boolean {
  if (isIP(address) === 4) return address.startsWith("127.");
  return address === "::1";
}

/** Normalizes a host:port for GATEWAY_TARGET_HOSTS (`host`, `host:port`, `[v6]:port`, bare v6). */
export function allowListEntry(entry: string): string | undefined {
  const e = entry.trim();
  const m = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(e) ?? /^([^:]+)(?::(\d{1,5}))?$/.exec(e);
  const [host, port] = m ? [m[1] ?? "", m[2] ?? "*"] : [e, "*"];
  const n = normalizeHost(host);
  if (n.kind === "ip") return `${n.address}|${port}`;
  if (n.kind === "name") return `${n.name}|${port}`;
  return undefined;
}

/** A target that passed the policy: `host` is the normalized form to send on. */
export interface CheckedTarget extends Target {
  /** listed in GATEWAY_TARGET_HOSTS: reached as written, not resolved or range-checked */
  trusted: boolean;
  isName: boolean;
}

const refuse = (why: string) => new GatewayError("E_TARGET_BLOCKED", why);

/** Normalizes and checks a customer's target; throws E_TARGET_BLOCKED / E_TARGET_UNREACHABLE. */
export function checkTarget(target: Target, policy: TargetPolicy): CheckedTarget {
  if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65_535)
    throw new GatewayError("E_TARGET_UNREACHABLE", `invalid target port ${target.port}`);
  const n = normalizeHost(target.host);
  if (n.kind === "invalid") throw new GatewayError("E_TARGET_UNREACHABLE", "invalid target host");
  if (n.kind === "scoped") throw refuse("scoped (zone id) addresses are not allowed");
  const host = n.kind === "ip" ? n.address : n.name;
  if (policy.allowList) {
    if (policy.allowList.has(`${host}|${target.port}`) || policy.allowList.has(`${host}|*`))
      return { host, port: target.port, trusted: true, isName: n.kind === "name" };
    throw refuse(
      `this gateway only reaches ${[...policy.allowList].map((e) => e.replace("|", ":")).join(", ")}`,
    );
  }
  if (n.kind === "ip") {
    if (isBlockedAddress(n.address) && !(policy.allowLoopback && isLoopbackAddress(n.address)))
      throw refuse("private, loopback, link-local and multicast targets are not allowed");
    return { host, port: target.port, trusted: false, isName: false };
  }
  const loopbackName = LOOPBACK_NAMES.test(n.name);
  const privateName = PRIVATE_NAMES.test(n.name) || !n.name.includes(".");
  if ((loopbackName && !policy.allowLoopback) || (privateName && !loopbackName))
    throw refuse("names of local and internal hosts are not allowed");
  return { host, port: target.port, trusted: loopbackName, isName: true };
}

export type Lookup = (name: string) => Promise<string[]>;

/**
 * For an exit that cannot check targets itself: resolves a name here and returns the first address
 * the policy allows, which is what the exit must dial. Literals and trusted targets pass unchanged.
 */
export async function resolveForExit(
  target: CheckedTarget,
  policy: TargetPolicy,
  lookup: Lookup,
): Promise<Target> {
  if (!target.isName || target.trusted) return { host: target.host, port: target.port };
  let addresses: string[];
  try {
    addresses = await lookup(target.host);
  } catch {
    throw new GatewayError("E_TARGET_UNREACHABLE", `could not resolve ${target.host}`, {
      proxyStatus: "dns_error",
    });
  }
  const usable = addresses.find(
    (a) => isIP(a) !== 0 && (!isBlockedAddress(a) || (policy.allowLoopback && isLoopbackAddress(a))),
  );
  if (!usable) {
    if (addresses.length === 0)
      throw new GatewayError("E_TARGET_UNREACHABLE", `${target.host} has no addresses`, {
        proxyStatus: "dns_error",
      });
    throw refuse(`${target.host} resolves to a non-public address`);
  }
  return { host: usable, port: target.port };
}
