import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { isBlockedAddress } from "../../shared/blocked-addresses.ts";

export { isBlockedAddress };

/**
 * Egress safety: a peer shares its uplink, not its LAN. Targets are checked on the address they
 * RESOLVE to and the TCP connect then goes to that very address, so a name that answers public
 * at check time and private at connect time (DNS rebinding) cannot slip through.
 */

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
