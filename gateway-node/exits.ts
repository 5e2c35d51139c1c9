/**
 * Opening the exit leg of a tunnel: peers through the relay that holds them (internal POST /tunnel
 * upgrade, docs/internal.md), production modems through their upstream HTTP proxy port (CONNECT).
 */
import type { Socket } from "node:net";
import type { SelectedEndpoint } from "../shared/pool.ts";
import {
  openConnectTunnel,
  openRelayTunnel,
  type PooledSink,
  ReadPool,
  type TunnelOpen,
  type TunnelTarget,
} from "../shared/tunnel-open.node.ts";
import { basicProxyAuthorization, openUpstreamAuth } from "../shared/upstream-auth.ts";
import { GatewayError } from "./errors.ts";

export type Target = TunnelTarget;

export type ExitResult =
  /** with `onRead`, the exit's reads go to the sink given to it, in pooled buffers (no 'data' events) */
  | { ok: true; socket: Socket; head: Buffer; onRead?: (sink: PooledSink) => void }
  /** side "exit": the endpoint itself failed (try another); "target": the exit could not reach the target */
  | { ok: false; side: "exit" | "target"; reason: string; error: GatewayError };

const unreachable = (reason: string, proxyStatus = "destination_unavailable") =>
  new GatewayError("E_TARGET_UNREACHABLE", `exit could not reach the target (${reason})`, { proxyStatus });
const blocked = () => new GatewayError("E_TARGET_BLOCKED", "the exit refuses this target");
const exitDown = (reason: string) =>
  new GatewayError("E_NO_STOCK", `exit unavailable (${reason})`, { proxyStatus: "proxy_internal_error" });

export function openExit(
  endpoint: SelectedEndpoint,
  target: Target,
  /** buyerAccountId: the credential's account; a relay pays nothing for an account's own devices */
  opts: {
    relaySecret: string;
    timeoutMs: number;
    requestId: string;
    buyerAccountId?: string;
    /** opens a modem's sealed upstream credentials */
    modemUpstreamKey?: string;
  },
): Promise<ExitResult> {
  return endpoint.kind === "modem" ? openModem(endpoint, target, opts) : openPeer(endpoint, target, opts);
}

/**
 * The buffers every relay leg of this process reads into (ADR 0028): what the exit sends is
 * written to the customer straight from them, and a buffer comes back when that write is done.
 */
const exitReads = new ReadPool();

async function openPeer(
  endpoint: SelectedEndpoint,
  target: Target,
  opts: { relaySecret: string; timeoutMs: number; requestId: string; buyerAccountId?: string },
): Promise<ExitResult> {
  const r = await openRelayTunnel({
    relayInternal: endpoint.relayInternal ?? "",
    deviceId: endpoint.deviceId ?? endpoint.endpointId,
    secret: opts.relaySecret,
    requestId: opts.requestId,
    buyerAccountId: opts.buyerAccountId,
    target,
    timeoutMs: opts.timeoutMs,
    reads: exitReads,
  });
  if (r.ok) return r;
  switch (r.failure) {
    case "timeout":
      return {
        ok: false,
        side: "target",
        reason: "timeout",
        error: unreachable("timeout", "connection_timeout"),
      };
    case "transport":
      return { ok: false, side: "exit", reason: `relay_${r.code}`, error: exitDown("relay unreachable") };
    case "refused": {
      const code = r.code ?? `http_${r.status}`;
      if (code !== "tunnel_open_failed" && code !== "connect_timeout")
        return { ok: false, side: "exit", reason: code, error: exitDown(code) };
      const reason = r.reason ?? (code === "connect_timeout" ? "timeout" : "unknown");
      if (reason === "blocked_target") return { ok: false, side: "target", reason, error: blocked() };
      return { ok: false, side: "target", reason, error: unreachable(reason, peerProxyStatus(reason)) };
    }
    case "bad_url":
      return { ok: false, side: "exit", reason: "bad_relay_url", error: exitDown("bad relay url") };
    default:
      return { ok: false, side: "exit", reason: "relay_error", error: exitDown("relay error") };
  }
}

function peerProxyStatus(reason: string): string {
  if (reason === "connection_refused") return "connection_refused";
  if (reason === "dns_failed") return "dns_error";
  if (reason === "timeout") return "connection_timeout";
  return "destination_unavailable";
}

async function openModem(
  endpoint: SelectedEndpoint,
  target: Target,
  opts: { timeoutMs: number; modemUpstreamKey?: string },
): Promise<ExitResult> {
  let proxyAuthorization: string | undefined;
  if (endpoint.upstreamAuth) {
    const auth = opts.modemUpstreamKey
      ? await openUpstreamAuth(opts.modemUpstreamKey, endpoint.upstreamAuth)
      : undefined;
    // Never dial a modem that wants credentials without them: it would only answer 407.
    if (!auth)
      return {
        ok: false,
        side: "exit",
        reason: "modem_credentials_unreadable",
        error: exitDown("modem credentials cannot be opened (MODEM_UPSTREAM_KEY)"),
      };
    proxyAuthorization = basicProxyAuthorization(auth);
  }
  const r = await openConnectTunnel({
    host: endpoint.host ?? "127.0.0.1",
    port: endpoint.port ?? 0,
    target,
    timeoutMs: opts.timeoutMs,
    ...(proxyAuthorization ? { proxyAuthorization } : {}),
  });
  if (r.ok) return r;
  return modemFailure(r);
}

function modemFailure(r: Exclude<TunnelOpen, { ok: true }>): ExitResult {
  switch (r.failure) {
    case "timeout":
      return r.connected
        ? {
            ok: false,
            side: "target",
            reason: "timeout",
            error: unreachable("timeout", "connection_timeout"),
          }
        : { ok: false, side: "exit", reason: "modem_timeout", error: exitDown("modem timeout") };
    case "transport":
      return { ok: false, side: "exit", reason: `modem_${r.code}`, error: exitDown("modem unreachable") };
    case "refused":
      if (r.status === 403) return { ok: false, side: "target", reason: "blocked_target", error: blocked() };
      if (r.status >= 500 || r.status === 404 || r.status === 400)
        return {
          ok: false,
          side: "target",
          reason: `modem_${r.status}`,
          error: unreachable(`upstream ${r.status}`),
        };
      return {
        ok: false,
        side: "exit",
        reason: `modem_${r.status}`,
        error: exitDown(`modem answered ${r.status}`),
      };
    case "closed":
      return { ok: false, side: "exit", reason: "modem_closed", error: exitDown("modem closed") };
    default:
      return { ok: false, side: "exit", reason: "modem_bad_reply", error: exitDown("bad modem reply") };
  }
}
