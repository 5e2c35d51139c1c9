// One watchdog check over the wire (docs/adr/0006): the codes, and CONNECT -> TLS -> GET.
import { request as httpRequest, type IncomingMessage } from "node:http";
import { isIP, connect as netConnect, type Socket } from "node:net";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { openConnectTunnel } from "../shared/tunnel-open.node.ts";
import type { ProbeTargetConfig } from "./probe.ts";

/**
 * Check error codes (stable: rows keep them; documented in prober/README.md). Our side of the
 * wire, whatever group it happened in: `gateway_unreachable` (no TCP to the gateway, or it closed
 * before answering), `proxy_auth_failed` (our key was refused: 407, cap 402, suspended 403, 429,
 * bad username 400), `gateway_error` (any other non-exit answer: 503, target blocked, garbage).
 * The exit's side: `no_exit` (502 E_NO_STOCK / E_SESSION_PEER_GONE), `tunnel_failed` (502: the exit
 * could not reach the target), `tls_failed` (handshake inside the tunnel failed or the certificate
 * did not verify), `http_status` (not 200), `body_failed` (closed before the whole body),
 * `timeout` (over WATCHDOG_TIMEOUT_MS). Self-check only: `target_unreachable` (no TCP to the target).
 */
export const WATCHDOG_ERRORS = [
  "gateway_unreachable",
  "proxy_auth_failed",
  "gateway_error",
  "no_exit",
  "tunnel_failed",
  "tls_failed",
  "http_status",
  "body_failed",
  "timeout",
  "target_unreachable",
] as const;
export type WatchdogError = (typeof WATCHDOG_ERRORS)[number];

export type GroupPool = "mbl" | "peer";

export interface WatchdogGroup {
  pool: GroupPool;
  /** ISO-2 lowercase */
  country: string;
}

export interface CheckResult {
  ok: boolean;
  /** start of the check to the last body byte (or to the TCP connect for the gateway port) */
  latencyMs?: number;
  error?: WatchdogError;
  /** free text for logs and alert details (never a selector, never a secret) */
  detail?: string;
}

export interface GroupCheck extends WatchdogGroup, CheckResult {
  /** X-Request-ID sent to the gateway, to find the request in its logs */
  requestId: string;
}

export interface SelfCheck {
  ok: boolean;
  /** TCP connect to the gateway's customer port */
  gateway: CheckResult;
  /** the target fetched directly from the watchdog's host, no gateway */
  target: CheckResult;
}

export type Track = (cleanup: () => void) => void;
type Failure = { ok: false; error: WatchdogError; detail?: string };

/** Runs one check under a deadline; never throws; destroys every socket it opened either way. */
export async function timed(
  timeoutMs: number,
  work: (track: Track, started: number) => Promise<CheckResult>,
): Promise<CheckResult> {
  const started = performance.now();
  const cleanups: (() => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, error: "timeout", detail: `over ${timeoutMs} ms` }),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([
      work((c) => cleanups.push(c), started).catch(
        (err: Error): CheckResult => ({ ok: false, error: "body_failed", detail: err.message }),
      ),
      deadline,
    ]);
  } finally {
    clearTimeout(timer);
    for (const c of cleanups) c();
  }
}

export function tcpConnect(
  addr: { host: string; port: number },
  track: Track,
): Promise<{ ok: true; socket: Socket } | { ok: false; detail: string }> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: addr.host, port: addr.port });
    track(() => socket.destroy());
    // Resolving twice is harmless; the listener also keeps a later reset from being an uncaught error.
    socket.on("error", (err: NodeJS.ErrnoException) =>
      resolve({ ok: false, detail: err.code ?? err.message }),
    );
    socket.once("connect", () => resolve({ ok: true, socket }));
  });
}

function authority(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The gateway's answer to CONNECT, as our code: by its error code (Proxy-Status) first, then status. */
export function connectFailure(status: number, gatewayCode: string | undefined): WatchdogError {
  switch (gatewayCode) {
    case "E_NO_STOCK":
    case "E_SESSION_PEER_GONE":
      return "no_exit";
    case "E_TARGET_UNREACHABLE":
      return "tunnel_failed";
    case "E_AUTH_REQUIRED":
    case "E_AUTH_INVALID":
    case "E_CAP_EXCEEDED":
    case "E_CREDENTIAL_SUSPENDED":
    case "E_USERNAME_PARSE":
    case "E_RATE_LIMITED":
      return "proxy_auth_failed";
    case "E_TARGET_BLOCKED":
    case "E_INTERNAL":
      return "gateway_error";
  }
  if (status === 502) return "tunnel_failed";
  if ([400, 402, 407, 429].includes(status)) return "proxy_auth_failed";
  return "gateway_error";
}

/**
 * HTTP CONNECT through the gateway as a customer (the one CONNECT client, shared/tunnel-open.node.ts);
 * the open tunnel, or why not in our codes.
 */
export async function proxyConnect(
  proxy: { host: string; port: number },
  target: ProbeTargetConfig,
  auth: { authorization: string; requestId: string },
  track: Track,
  timeoutMs: number,
): Promise<{ ok: true; socket: Socket } | Failure> {
  const abort = new AbortController();
  track(() => abort.abort());
  const r = await openConnectTunnel({
    host: proxy.host,
    port: proxy.port,
    target,
    timeoutMs,
    signal: abort.signal,
    proxyAuthorization: auth.authorization,
    headers: { "X-Request-ID": auth.requestId },
  });
  if (r.ok) {
    track(() => r.socket.destroy());
    if (r.head.length > 0) r.socket.unshift(r.head);
    return { ok: true, socket: r.socket };
  }
  switch (r.failure) {
    case "refused": {
      const code = /details="([A-Z_]+)"/.exec(r.proxyStatus ?? "")?.[1];
      return {
        ok: false,
        error: connectFailure(r.status, code),
        detail: `gateway ${r.status}${code ? ` ${code}` : ""}`,
      };
    }
    case "transport":
      return { ok: false, error: "gateway_unreachable", detail: r.code };
    case "closed":
      return { ok: false, error: "gateway_unreachable", detail: "closed before answering CONNECT" };
    case "bad_reply":
      return { ok: false, error: "gateway_error", detail: "gateway garbage" };
    case "timeout":
      return { ok: false, error: "timeout", detail: `CONNECT not answered in ${timeoutMs} ms` };
    default:
      return { ok: false, error: "gateway_unreachable", detail: r.failure };
  }
}

/** TLS to the target over an open socket (a tunnel or a direct connection), then one GET of n bytes. */
export async function fetchOver(
  socket: Socket,
  target: ProbeTargetConfig,
  n: number,
  track: Track,
  started: number,
): Promise<CheckResult> {
  const tls = await new Promise<{ ok: true; tls: TLSSocket } | Failure>((resolve) => {
    const t = tlsConnect({
      socket,
      host: target.host,
      // SNI must not be an IP literal (RFC 6066); identity is then checked against `host`.
      servername: isIP(target.host) ? undefined : target.host,
      ca: target.caPem,
      rejectUnauthorized: true,
    });
    track(() => t.destroy());
    t.once("secureConnect", () => resolve({ ok: true, tls: t }));
    // `on`, not `once`: a second error on the same socket must not become an uncaught one.
    t.on("error", (err: NodeJS.ErrnoException) =>
      resolve({ ok: false, error: "tls_failed", detail: err.code ?? err.message }),
    );
    t.once("close", () => resolve({ ok: false, error: "tls_failed", detail: "closed during the handshake" }));
    socket.resume();
  });
  if (!tls.ok) return tls;
  return new Promise<CheckResult>((resolve) => {
    const req = httpRequest({
      createConnection: () => tls.tls,
      method: "GET",
      path: target.pathTemplate.replace("{n}", String(n)),
      headers: {
        Host: authority(target.host, target.port),
        "User-Agent": "peerproxy-watchdog/1",
        Connection: "close",
      },
    });
    track(() => req.destroy());
    req.on("error", (err: NodeJS.ErrnoException) =>
      resolve({ ok: false, error: "body_failed", detail: err.code ?? err.message }),
    );
    req.on("response", (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        res.resume();
        resolve({ ok: false, error: "http_status", detail: `target answered ${res.statusCode}` });
        return;
      }
      let bytes = 0;
      res.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
      });
      res.on("end", () => {
        if (res.complete) resolve({ ok: true, latencyMs: Math.round(performance.now() - started) });
        else resolve({ ok: false, error: "body_failed", detail: `closed after ${bytes} body bytes` });
      });
      res.on("error", (err: NodeJS.ErrnoException) =>
        resolve({
          ok: false,
          error: "body_failed",
          detail: `${err.code ?? err.message} after ${bytes} bytes`,
        }),
      );
      res.on("aborted", () =>
        resolve({ ok: false, error: "body_failed", detail: `aborted after ${bytes} body bytes` }),
      );
    });
    req.end();
  });
}
