/**
 * The customer-facing caveats of x402 purchases, generated from the running configuration (the
 * gateways' byte lease and hold lease, the bare-hash policy) so purchase answers, the price sheets
 * and /skill.md cannot drift from what the gateway enforces (docs/adr/0003, 0008).
 */
import { CAPS } from "../../../shared/pool.ts";
import type { Config } from "../config.ts";

type CaveatConfig = Pick<
  Config,
  "GATEWAY_BYTE_LEASE" | "GATEWAY_BYTE_LEASE_MAX" | "GATEWAY_HOLD_LEASE_MS" | "X402_BARE_HASH"
>;

function kib(bytes: number): string {
  if (bytes % (1024 * 1024) === 0) return `${bytes / 1024 / 1024} MiB`;
  return bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} bytes`;
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/** How the cap is enforced: in-line byte leases, so the overshoot is bounded per open connection. */
export function capCaveat(config: CaveatConfig): string {
  const first = config.GATEWAY_BYTE_LEASE;
  const most = Math.max(first, config.GATEWAY_BYTE_LEASE_MAX);
  const budget =
    most > first
      ? `${kib(first)}, doubling for a fast connection up to ${kib(most)},`
      : `at most ${kib(first)}`;
  return `The cap is enforced in-line: each open connection moves bytes only against a budget of ${budget} leased from your remaining traffic, and the key suspends the moment the cap is used up, so at most ~${kib(most)} per open connection can pass the cap.`;
}

/** What a hold lease means for connection and customer limits after a gateway dies. */
export function holdCaveat(config: CaveatConfig): string {
  return `Each connection holds its modem through a ${seconds(config.GATEWAY_HOLD_LEASE_MS)} lease renewed while it is open: if a gateway dies, its connections keep counting against connection limits for up to ${seconds(config.GATEWAY_HOLD_LEASE_MS)}.`;
}

/** The proof policy, as this deployment applies it. */
export function proofCaveat(config: CaveatConfig): string {
  return config.X402_BARE_HASH === "off"
    ? "Bare transaction hashes are refused here: a mined hash is public and anyone watching the recipient could present it first. Pay with a standard x402 EIP-3009 authorization (what x402 clients send), or send the tx reference in an x402 v2 payment header bound by a signature of the paying wallet."
    : "A bare tx hash is public once mined: the first request presenting it receives the credential. Prefer a standard x402 EIP-3009 authorization or the bound form (x402 v2 payment header signed by the paying wallet); a bare hash can never re-emit an existing credential.";
}

export const SESSION_CAVEAT =
  "Keep the sessionToken: it is the only way to see credit, top up, regenerate and re-emit the password; re-sending the payment header never re-emits (it is public once settled).";

/** Pool access caveats. */
export function poolCaveats(config: CaveatConfig): string[] {
  return [
    "Sticky pins the device (modem), not the exit IP: carriers re-issue mobile IPs on their own schedule.",
    "Stickiness needs a sid in the username (-sid-<8-64 a-z0-9_>); without one every connection is a fresh pick.",
    capCaveat(config),
    holdCaveat(config),
    SESSION_CAVEAT,
    proofCaveat(config),
    "Traffic is metered per GB in both directions; unused GB are not refunded; duration is free.",
  ];
}

/** Dedicated port caveats. */
export function dedicatedCaveats(config: CaveatConfig): string[] {
  return [
    "The modem is yours alone until expiresAt: no other customer is routed to it, and tunnels other customers had open on it when you bought it are closed within ~10 s.",
    "This key routes only to its modem, whatever pool, country or sid the username names; if the modem goes offline connections fail with E_NO_STOCK and we do not move you to another one.",
    "The exit IP is the modem's carrier IP: carriers re-issue it on their own schedule. POST the rotationUrl (X-Session-Token) to ask the modem to re-dial for a new IP, where rotation.available is true; live connections drop during a re-dial.",
    `At most ${CAPS.modem.conns} concurrent connections go through the modem (its connection cap).`,
    `Traffic is metered and capped at the GB included per day bought (see credit); /topup adds GB at the pool price. ${capCaveat(config)} Unused days or GB are not refunded.`,
    holdCaveat(config),
    SESSION_CAVEAT,
    proofCaveat(config),
  ];
}
