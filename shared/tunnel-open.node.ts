/**
 * The client side of opening an exit leg, shared by the gateway (customer tunnels) and the prober
 * (which must take the exact path customers take): a peer through its relay's internal
 * `POST /tunnel` upgrade (docs/internal.md), a production modem through HTTP CONNECT on its
 * upstream proxy port. Callers map a failure to their own vocabulary (gateway error codes, probe
 * failure reasons); this module only reports what happened on the wire.
 */
import { request } from "node:http";
import type { Socket } from "node:net";

export interface TunnelTarget {
  host: string;
  port: number;
}

/** host:port with IPv6 literals in brackets. */
export function formatTarget(t: TunnelTarget): string {
  return t.host.includes(":") ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

export type TunnelOpen =
  /** `socket` is paused; `head` holds tunnel bytes that arrived with the answer */
  | { ok: true; socket: Socket; head: Buffer }
  | { ok: false; failure: "bad_url" }
  /** `connected`: the TCP connection to the relay/modem was up when time ran out */
  | { ok: false; failure: "timeout"; connected: boolean }
  /** connecting or talking to the relay/modem failed; `code` is the errno code */
  | { ok: false; failure: "transport"; code: string }
  /** the modem closed before answering, or its answer was unparseable or oversized */
  | { ok: false; failure: "closed" | "bad_reply" }
  /**
   * a non-success answer; `code`/`reason` from the relay's JSON body when it sent one, and a CONNECT
   * proxy's `Proxy-Status` header (RFC 9209) when it sent one
   */
  | { ok: false; failure: "refused"; status: number; code?: string; reason?: string; proxyStatus?: string }
  | { ok: false; failure: "aborted" };

interface OpenCommon {
  target: TunnelTarget;
  timeoutMs: number;
  /** aborting destroys whatever is open and settles with `aborted` */
  signal?: AbortSignal;
}

/** One-shot settling shared by both openers: first result wins, a late success is closed. */
function settler(resolve: (r: TunnelOpen) => void, cleanup: (r: TunnelOpen) => void, signal?: AbortSignal) {
  let settled = false;
  let timer: NodeJS.Timeout | undefined;
  const done = (r: TunnelOpen) => {
    if (settled) {
      if (r.ok) r.socket.destroy();
      return;
    }
    settled = true;
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    cleanup(r);
    resolve(r);
  };
  const onAbort = () => done({ ok: false, failure: "aborted" });
  signal?.addEventListener("abort", onAbort, { once: true });
  return {
    done,
    startTimer(ms: number, onTimeout: () => TunnelOpen) {
      timer = setTimeout(() => done(onTimeout()), ms);
    },
    aborted: () => signal?.aborted === true,
  };
}

const MAX_BODY = 4096;

/** Asks the relay at `relayInternal` to open a tunnel on `deviceId` to the target. */
export function openRelayTunnel(
  opts: OpenCommon & {
    relayInternal: string;
    deviceId: string;
    secret: string;
    requestId?: string;
    /** the prober's own traffic: the relay counts it for metrics but not for the device's earnings */
    probe?: boolean;
    /** the account whose credential this tunnel serves: the relay pays nothing when it owns the device */
    buyerAccountId?: string;
  },
): Promise<TunnelOpen> {
  return new Promise((resolve) => {
    let url: URL;
    try {
      url = new URL("/tunnel", opts.relayInternal);
    } catch {
      resolve({ ok: false, failure: "bad_url" });
      return;
    }
    const target = formatTarget(opts.target);
    const req = request(url, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${opts.secret}`,
        "X-Device-Id": opts.deviceId,
        "X-Target": target,
        ...(opts.requestId ? { "X-Request-ID": opts.requestId } : {}),
        ...(opts.probe ? { "X-Traffic": "probe" } : {}),
        ...(opts.buyerAccountId ? { "X-Buyer-Account": opts.buyerAccountId } : {}),
        Connection: "Upgrade",
        Upgrade: "peerproxy-tunnel/1",
        "Content-Length": "0",
      },
    });
    const s = settler(resolve, (r) => !r.ok && req.destroy(), opts.signal);
    if (s.aborted()) return s.done({ ok: false, failure: "aborted" });
    let connected = false;
    req.on("socket", (sock) => sock.once("connect", () => (connected = true)));
    s.startTimer(opts.timeoutMs, () => ({ ok: false, failure: "timeout", connected }));
    req.on("upgrade", (_res, socket, head) => s.done({ ok: true, socket, head }));
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        if (text.length < MAX_BODY) text += d;
      });
      res.on("end", () => {
        let body: { code?: unknown; reason?: unknown } = {};
        try {
          body = JSON.parse(text) as typeof body;
        } catch {}
        s.done({
          ok: false,
          failure: "refused",
          status: res.statusCode ?? 0,
          ...(typeof body.code === "string" ? { code: body.code } : {}),
          ...(typeof body.reason === "string" ? { reason: body.reason } : {}),
        });
      });
      res.on("error", () => s.done({ ok: false, failure: "refused", status: res.statusCode ?? 0 }));
    });
    req.on("error", (err: NodeJS.ErrnoException) =>
      s.done({ ok: false, failure: "transport", code: err.code ?? "error" }),
    );
    req.end();
  });
}

/**
 * HTTP CONNECT through an upstream proxy: a production modem's port (gateway, prober) or the
 * gateway itself (the prober's fleet watchdog, buying like a customer). On node:http's `connect`
 * event, which Node emits for a CONNECT answer of any status with the raw socket: the header parser
 * (and its limits) is Node's, not ours.
 */
export function openConnectTunnel(
  opts: OpenCommon & {
    host: string;
    port: number;
    proxyAuthorization?: string;
    /** extra request headers, e.g. X-Request-ID */
    headers?: Record<string, string>;
  },
): Promise<TunnelOpen> {
  return new Promise((resolve) => {
    const t = formatTarget(opts.target);
    const req = request({
      host: opts.host,
      port: opts.port,
      method: "CONNECT",
      path: t,
      agent: false,
      headers: {
        Host: t,
        ...(opts.proxyAuthorization ? { "Proxy-Authorization": opts.proxyAuthorization } : {}),
        ...opts.headers,
      },
    });
    const s = settler(resolve, (r) => !r.ok && req.destroy(), opts.signal);
    if (s.aborted()) return s.done({ ok: false, failure: "aborted" });
    let connected = false;
    req.on("socket", (sock) => sock.once("connect", () => (connected = true)));
    s.startTimer(opts.timeoutMs, () => ({ ok: false, failure: "timeout", connected }));
    req.on("connect", (res, socket, head) => {
      if (res.statusCode === 200) {
        socket.pause();
        // node:http lets go of the socket here, listeners included: until the caller attaches its
        // own, an error (a reset) must not become an uncaught exception.
        socket.on("error", () => {});
        s.done({ ok: true, socket, head });
        return;
      }
      socket.destroy();
      const proxyStatus = res.headers["proxy-status"];
      s.done({
        ok: false,
        failure: "refused",
        status: res.statusCode ?? 0,
        ...(typeof proxyStatus === "string" ? { proxyStatus } : {}),
      });
    });
    req.on("error", (err: NodeJS.ErrnoException) => {
      const code = err.code ?? "error";
      // "socket hang up": the proxy closed before answering; HPE_*: its answer was not HTTP or too big.
      if (code === "ECONNRESET" && err.message === "socket hang up") s.done({ ok: false, failure: "closed" });
      else if (code.startsWith("HPE_")) s.done({ ok: false, failure: "bad_reply" });
      else s.done({ ok: false, failure: "transport", code });
    });
    req.end();
  });
}
