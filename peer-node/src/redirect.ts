import { isIP } from "node:net";

/** Whether to follow a relay_redirect (PROTOCOL.md section 2); `reason` says why not. */
export type RedirectDecision = { follow: true; target: string } | { follow: false; reason: string };

export interface RedirectContext {
  /** -relay/RELAY_URL set: the operator chose the relay, the server may not move us. */
  pinned: boolean;
  /** Hosts or parent domains a redirect may go to. */
  allowlist: readonly string[];
  currentRelay: string;
  /** ms epoch of the last redirect we followed, undefined if none. */
  lastRedirectAt: number | undefined;
  now: number;
  /** Anti-flap: minimum gap between two followed redirects (60 s). */
  cooldownMs: number;
}

export const REDIRECT_COOLDOWN_MS = 60_000;

/**
 * The default allow-list entry for a relay URL: its domain. For a name with three or more labels
 * that is the last two (`eu.relay.peerproxy.dev` -> `peerproxy.dev`), so sibling regional relays
 * qualify; an IP literal or a single label stands for itself. Two labels is a heuristic without a
 * public-suffix list: pass -relay-allow explicitly for domains like `example.co.uk`.
 */
export function relayDomain(relayUrl: string): string {
  const host = hostOf(relayUrl);
  if (!host || isIP(host)) return host;
  const labels = host.split(".");
  return labels.length <= 2 ? host : labels.slice(-2).join(".");
}

function hostOf(url: string): string {
  try {
    return new URL(url).hostname.replace(/^\[|\]$/g, "").toLowerCase();
  } catch {
    return "";
  }
}

function sameRelay(a: string, b: string): boolean {
  try {
    const ua = new URL(a);
    const ub = new URL(b);
    return (
      ua.protocol === ub.protocol &&
      ua.host === ub.host &&
      ua.pathname.replace(/\/$/, "") === ub.pathname.replace(/\/$/, "")
    );
  } catch {
    return a === b;
  }
}

export function decideRedirect(target: unknown, ctx: RedirectContext): RedirectDecision {
  if (ctx.pinned) return { follow: false, reason: "relay pinned by configuration" };
  if (typeof target !== "string" || !/^wss?:\/\//.test(target) || !URL.canParse(target))
    return { follow: false, reason: "target is not a ws:// or wss:// URL" };
  const host = hostOf(target);
  const allowed = ctx.allowlist.some((entry) => {
    const e = entry.toLowerCase().replace(/^\./, "");
    return host === e || host.endsWith(`.${e}`);
  });
  if (!allowed) return { follow: false, reason: `host ${host} not on the relay allow-list` };
  if (sameRelay(target, ctx.currentRelay)) return { follow: false, reason: "already on that relay" };
  if (ctx.lastRedirectAt !== undefined && ctx.now - ctx.lastRedirectAt <= ctx.cooldownMs)
    return { follow: false, reason: "last redirect too recent" };
  return { follow: true, target };
}
