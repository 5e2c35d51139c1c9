/**
 * Probe v2 (seed section 4): measure what a customer experiences. Open a tunnel through the exact
 * exit a customer would get (a peer via its relay's internal POST /tunnel, a modem via HTTP CONNECT),
 * do a TLS handshake with the target inside that tunnel, then fetch real bodies, growing the size
 * until one transfer takes long enough to mean something. Failure codes: prober/README.md.
 */
import { isIP, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import type { SpeedTier } from "../shared/pool.ts";
import {
  formatTarget,
  openConnectTunnel,
  openRelayTunnel,
  type TunnelOpen,
} from "../shared/tunnel-open.node.ts";

/** Stable failure codes; documented in prober/README.md. Never rename one: history rows keep them. */
export const FAILURE_REASONS = [
  "no_exit_ip",
  "connect_refused",
  "tunnel_open_failed",
  "tls_dropped_before_hello",
  "tls_dropped_after_hello",
  "tls_handshake_timeout",
  "tls_cert_invalid",
  "bad_status",
  "body_stalled",
  "body_truncated",
  "probe_overall_timeout",
] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

export type ProbeExit =
  | { kind: "peer"; deviceId: string; relayInternal: string }
  | { kind: "modem"; host: string; port: number; proxyAuthorization?: string };

export interface ProbeTargetConfig {
  host: string;
  port: number;
  /** PEM of the CA the target's certificate chains to; omit to trust the system store */
  caPem?: string;
  /** request path for a body of N bytes; "{n}" is replaced by the byte count */
  pathTemplate: string;
}

export interface ProbeOptions {
  target: ProbeTargetConfig;
  relaySecret: string;
  connectTimeoutMs: number;
  tlsTimeoutMs: number;
  /** no body byte for this long = body_stalled */
  stallMs: number;
  overallTimeoutMs: number;
  initialBytes: number;
  maxBytes: number;
  /** stop growing once one transfer takes at least this long */
  transferTargetMs: number;
  /** below this body size a throughput number is noise: speedTier stays unknown */
  minBytesForSpeed: number;
  fastKBps: number;
  mediumKBps: number;
}

export interface ProbeResult {
  endpointId: string;
  probeMode: "connect_v2";
  ok: boolean;
  failureReason?: FailureReason;
  /** free text for logs only (never a selector): the failure's underlying error */
  detail?: string;
  /**
   * The relay refused the prober itself (its RELAY_SHARED_SECRET): nothing was learned about the
   * exit, so no verdict may be recorded against it.
   */
  proberRefused?: true;
  tlsHandshakeMs?: number;
  throughputKBps?: number;
  speedTier: SpeedTier;
  /** body bytes received across all transfers */
  bytes: number;
  durationMs: number;
}

type Step<T> =
  | ({ ok: true } & T)
  | { ok: false; reason: FailureReason; detail?: string; proberRefused?: true };

/** Tier from a measured throughput; unknown when nothing meaningful was measured. */
export function speedTierFor(
  kbps: number | undefined,
  opts: Pick<ProbeOptions, "fastKBps" | "mediumKBps">,
): SpeedTier {
  if (kbps === undefined) return "unknown";
  if (kbps >= opts.fastKBps) return "fast";
  if (kbps >= opts.mediumKBps) return "medium";
  return "slow";
}

/**
 * The raw tunnel bytes as a stream TLS can sit on, counting what the far side sent: whether any
 * byte came back before a drop is what tells tls_dropped_before_hello from _after_hello.
 */
class CountingTunnel extends Duplex {
  bytesIn = 0;
  readonly socket: Socket;
  constructor(socket: Socket, head: Buffer) {
    super();
    this.socket = socket;
    if (head.length > 0) {
      this.bytesIn += head.length;
      this.push(head);
    }
    socket.on("data", (chunk: Buffer) => {
      this.bytesIn += chunk.length;
      if (!this.push(chunk)) socket.pause();
    });
    socket.on("end", () => this.push(null));
    socket.on("error", (err) => this.destroy(err));
    socket.on("close", () => this.destroy());
    socket.resume();
  }
  override _read(): void {
    this.socket.resume();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) cb(new Error("tunnel closed"));
    else this.socket.write(chunk, cb);
  }
  override _final(cb: () => void): void {
    this.socket.end();
    cb();
  }
  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}

type Opened = Step<{ socket: Socket; head: Buffer }>;

async function openTunnel(exit: ProbeExit, opts: ProbeOptions, signal: AbortSignal): Promise<Opened> {
  const common = { target: opts.target, timeoutMs: opts.connectTimeoutMs, signal };
  if (exit.kind === "peer") {
    const r = await openRelayTunnel({
      ...common,
      relayInternal: exit.relayInternal,
      deviceId: exit.deviceId,
      secret: opts.relaySecret,
      probe: true,
    });
    if (r.ok) return r;
    switch (r.failure) {
      case "bad_url":
        return { ok: false, reason: "no_exit_ip", detail: "bad relayInternal in presence" };
      case "refused": {
        const detail = `relay ${r.status} ${r.code ?? ""} ${r.reason ?? ""}`.trim();
        if (r.status === 404) return { ok: false, reason: "no_exit_ip", detail };
        // 401 bad_secret: our own secret is wrong (a rotation half done, another network's relay).
        if (r.status === 401) return { ok: false, reason: "tunnel_open_failed", detail, proberRefused: true };
        if (r.reason === "connection_refused") return { ok: false, reason: "connect_refused", detail };
        return { ok: false, reason: "tunnel_open_failed", detail };
      }
      default:
        return transportFailure("relay", r);
    }
  }
  const r = await openConnectTunnel({
    ...common,
    host: exit.host,
    port: exit.port,
    ...(exit.proxyAuthorization ? { proxyAuthorization: exit.proxyAuthorization } : {}),
  });
  if (r.ok) return r;
  if (r.failure === "refused")
    return { ok: false, reason: "tunnel_open_failed", detail: `modem answered ${r.status}` };
  return transportFailure("modem", r);
}

function transportFailure(who: "relay" | "modem", r: Exclude<TunnelOpen, { ok: true }>): Opened {
  if (r.failure === "transport")
    return {
      ok: false,
      reason: r.code === "ECONNREFUSED" ? "connect_refused" : "tunnel_open_failed",
      detail: `${who}: ${r.code}`,
    };
  const detail =
    r.failure === "timeout"
      ? "tunnel open timed out"
      : r.failure === "closed"
        ? `${who} closed before answering`
        : `${who}: ${r.failure}`;
  return { ok: false, reason: "tunnel_open_failed", detail };
}

const MAX_HEADER = 16 * 1024;
const CERT_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|ISSUER/;

function handshake(
  tunnel: CountingTunnel,
  opts: ProbeOptions,
): Promise<Step<{ tls: TLSSocket; ms: number }>> {
  return new Promise((resolve) => {
    const started = performance.now();
    const { host } = opts.target;
    const tls = tlsConnect({
      socket: tunnel,
      host,
      // SNI must not be an IP literal (RFC 6066); identity is then checked against `host`.
      servername: isIP(host) ? undefined : host,
      ca: opts.target.caPem,
      rejectUnauthorized: true,
    });
    let settled = false;
    const done = (r: Step<{ tls: TLSSocket; ms: number }>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!r.ok) tls.destroy();
      resolve(r);
    };
    const dropped = (detail: string) =>
      done({
        ok: false,
        reason: tunnel.bytesIn === 0 ? "tls_dropped_before_hello" : "tls_dropped_after_hello",
        detail: `${detail} after ${tunnel.bytesIn} bytes from the target`,
      });
    const timer = setTimeout(
      () =>
        done({
          ok: false,
          reason: "tls_handshake_timeout",
          detail: `${tunnel.bytesIn} bytes from the target`,
        }),
      opts.tlsTimeoutMs,
    );
    tls.once("secureConnect", () => done({ ok: true, tls, ms: Math.round(performance.now() - started) }));
    tls.on("error", (err: NodeJS.ErrnoException) => {
      if (CERT_ERRORS.test(err.code ?? ""))
        done({ ok: false, reason: "tls_cert_invalid", detail: err.code ?? err.message });
      else dropped(err.code ?? err.message);
    });
    tls.once("close", () => dropped("closed"));
  });
}

/** One GET on the open TLS connection (keep-alive), counting body bytes as they arrive. */
function fetchBody(
  tls: TLSSocket,
  n: number,
  opts: ProbeOptions,
): Promise<Step<{ bytes: number; ms: number }> & { bytes?: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    let header = Buffer.alloc(0);
    let contentLength = -1;
    let bytes = 0;
    let settled = false;
    const done = (r: Step<{ bytes: number; ms: number }> & { bytes?: number }) => {
      if (settled) return;
      settled = true;
      clearTimeout(stall);
      tls.off("data", onData);
      tls.off("close", onClose);
      resolve(r);
    };
    let stall = setTimeout(() => {}, 0);
    const armStall = () => {
      clearTimeout(stall);
      stall = setTimeout(
        () =>
          done({
            ok: false,
            reason: "body_stalled",
            bytes,
            detail: `no byte for ${opts.stallMs} ms after ${bytes} body bytes`,
          }),
        opts.stallMs,
      );
    };
    const onBody = (len: number) => {
      bytes += len;
      if (bytes >= contentLength) done({ ok: true, bytes, ms: performance.now() - started });
    };
    const onData = (chunk: Buffer) => {
      armStall();
      if (contentLength >= 0) {
        onBody(chunk.length);
        return;
      }
      header = Buffer.concat([header, chunk]);
      const end = header.indexOf("\r\n\r\n");
      if (end < 0) {
        if (header.length > MAX_HEADER)
          done({ ok: false, reason: "bad_status", detail: "oversized response header" });
        return;
      }
      const head = header.subarray(0, end).toString("latin1");
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      if (status !== 200) {
        done({ ok: false, reason: "bad_status", detail: `target answered ${status || "garbage"}` });
        return;
      }
      const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1];
      if (cl === undefined) {
        done({ ok: false, reason: "bad_status", detail: "target sent no Content-Length" });
        return;
      }
      contentLength = Number(cl);
      onBody(header.length - end - 4);
    };
    const onClose = () =>
      done(
        bytes === 0 && contentLength < 0
          ? { ok: false, reason: "body_truncated", bytes, detail: "tunnel closed before any response" }
          : {
              ok: false,
              reason: "body_truncated",
              bytes,
              detail: `closed after ${bytes} of ${contentLength} body bytes`,
            },
      );
    tls.on("data", onData);
    tls.once("close", onClose);
    armStall();
    const path = opts.target.pathTemplate.replace("{n}", String(n));
    tls.write(
      `GET ${path} HTTP/1.1\r\nHost: ${formatTarget(opts.target)}\r\nUser-Agent: peerproxy-prober/2\r\nAccept: */*\r\n\r\n`,
    );
  });
}

/** Probes one exit end to end; never throws, every failure is a result with a stable code. */
export async function probeExit(
  endpointId: string,
  exit: ProbeExit | null,
  opts: ProbeOptions,
): Promise<ProbeResult> {
  const started = performance.now();
  const cleanups: (() => void)[] = [];
  const track = (d: () => void) => cleanups.push(d);
  let bytes = 0;
  let tlsHandshakeMs: number | undefined;

  const fail = (reason: FailureReason, detail?: string, proberRefused?: true): ProbeResult => ({
    endpointId,
    probeMode: "connect_v2",
    ok: false,
    failureReason: reason,
    ...(detail ? { detail } : {}),
    ...(proberRefused ? { proberRefused } : {}),
    ...(tlsHandshakeMs !== undefined ? { tlsHandshakeMs } : {}),
    speedTier: "unknown",
    bytes,
    durationMs: Math.round(performance.now() - started),
  });

  const work = async (): Promise<ProbeResult> => {
    if (exit === null) return fail("no_exit_ip", "no presence: device not online");
    const abort = new AbortController();
    track(() => abort.abort());
    const opened = await openTunnel(exit, opts, abort.signal);
    if (!opened.ok) return fail(opened.reason, opened.detail, opened.proberRefused);
    const tunnel = new CountingTunnel(opened.socket, opened.head);
    track(() => tunnel.destroy());
    const hs = await handshake(tunnel, opts);
    if (!hs.ok) return fail(hs.reason, hs.detail);
    track(() => hs.tls.destroy());
    tlsHandshakeMs = hs.ms;

    let size = Math.min(opts.initialBytes, opts.maxBytes);
    let last = { bytes: 0, ms: 0 };
    for (;;) {
      const r = await fetchBody(hs.tls, size, opts);
      if (!r.ok) {
        bytes += r.bytes ?? 0;
        return fail(r.reason, r.detail);
      }
      bytes += r.bytes;
      last = r;
      if (r.ms >= opts.transferTargetMs || size >= opts.maxBytes) break;
      // Aim the next transfer at the target duration from the rate just seen, growing 2x-8x so a
      // slow first sample (TCP slow start) cannot make the series crawl.
      const aimed = (r.bytes / Math.max(r.ms, 1)) * opts.transferTargetMs * 1.2;
      size = Math.min(opts.maxBytes, Math.round(Math.min(size * 8, Math.max(size * 2, aimed))));
    }
    hs.tls.end();
    const throughputKBps =
      last.bytes >= opts.minBytesForSpeed
        ? Math.round(last.bytes / 1024 / (Math.max(last.ms, 1) / 1000))
        : undefined;
    return {
      endpointId,
      probeMode: "connect_v2",
      ok: true,
      tlsHandshakeMs,
      ...(throughputKBps !== undefined ? { throughputKBps } : {}),
      speedTier: speedTierFor(throughputKBps, opts),
      bytes,
      durationMs: Math.round(performance.now() - started),
    };
  };

  let overall: NodeJS.Timeout | undefined;
  const timedOut = new Promise<ProbeResult>((resolve) => {
    overall = setTimeout(
      () => resolve(fail("probe_overall_timeout", `over ${opts.overallTimeoutMs} ms`)),
      opts.overallTimeoutMs,
    );
  });
  try {
    return await Promise.race([work(), timedOut]);
  } finally {
    clearTimeout(overall);
    for (const c of cleanups) c();
  }
}
