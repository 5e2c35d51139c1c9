/**
 * The client side of opening an exit leg, shared by the gateway (customer tunnels) and the prober
 * (which must take the exact path customers take): a peer through its relay's internal
 * `POST /tunnel` upgrade (docs/internal.md), a production modem through HTTP CONNECT on its
 * upstream proxy port. Callers map a failure to their own vocabulary (gateway error codes, probe
 * failure reasons); this module only reports what happened on the wire.
 */
import { request } from "node:http";
import { connect, type Socket } from "node:net";

export interface TunnelTarget {
  host: string;
  port: number;
}

/** host:port with IPv6 literals in brackets. */
export function formatTarget(t: TunnelTarget): string {
  return t.host.includes(":") ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

export type TunnelOpen =
  /**
   * `socket` is paused; `head` holds tunnel bytes that arrived with the answer. With `onRead` the
   * socket reads into pooled buffers (openRelayTunnel's `reads`): its bytes go to the sink given to
   * `onRead`, never to 'data' listeners.
   */
  | { ok: true; socket: Socket; head: Buffer; onRead?: (sink: PooledSink) => void }
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
const MAX_ANSWER_HEAD = 16 * 1024;

/**
 * Buffers that socket reads land in (net's `onread`) instead of a fresh allocation per read, given
 * back once what was read has been written on. A read allocates only when the pool is empty; a
 * buffer given to a full pool is left to the GC. At hundreds of MB/s the per-read allocations (and
 * the collections they set off in a process with a real heap) cost more than the copy they save
 * (ADR 0028).
 *
 * A socket always holds the buffer its next read goes into, so only a busy socket (its last read
 * filled a buffer) is given one of its own; the others read into `shared`, copied out before the
 * read's callback returns (libuv fills it just before calling back). An idle tunnel holds none.
 */
export class ReadPool {
  readonly #free: Buffer[] = [];
  readonly size: number;
  readonly keep: number;
  readonly shared: Buffer;
  constructor(size = 64 * 1024, keep = 256) {
    this.size = size;
    this.keep = keep;
    this.shared = Buffer.allocUnsafeSlow(size);
  }
  #allocated = 0;
  take = (): Buffer => {
    const buf = this.#free.pop();
    if (buf) return buf;
    this.#allocated++;
    return Buffer.allocUnsafeSlow(this.size);
  };
  give(buf: Buffer): void {
    if (this.#free.length < this.keep) this.#free.push(buf);
  }
  /** buffers this pool ever allocated */
  get allocated(): number {
    return this.#allocated;
  }
}

/**
 * Where a pooled socket's reads go: `chunk` is a view of a pool buffer, `release` gives the buffer
 * back and must be called exactly when nothing refers to the chunk any more (a write's callback).
 */
export type PooledSink = (chunk: Buffer, release: () => void) => void;

/** A header value node:http would refuse: control characters would split the request. */
const BAD_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * Asks the relay at `relayInternal` to open a tunnel on `deviceId` to the target. The exchange is
 * one request and one answer on a connection of our own (docs/internal.md): a 101 hands the
 * connection over as the tunnel; any other answer is read (at most MAX_BODY of JSON) and refused.
 * With `reads`, the connection reads into that pool's buffers (the gateway: ADR 0028).
 */
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
    reads?: ReadPool;
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
    if (url.protocol !== "http:") return resolve({ ok: false, failure: "bad_url" });
    const headers: [string, string][] = [
      ["Host", url.host],
      ["Authorization", `Bearer ${opts.secret}`],
      ["X-Device-Id", opts.deviceId],
      ["X-Target", formatTarget(opts.target)],
      ...(opts.requestId ? [["X-Request-ID", opts.requestId] as [string, string]] : []),
      ...(opts.probe ? [["X-Traffic", "probe"] as [string, string]] : []),
      ...(opts.buyerAccountId ? [["X-Buyer-Account", opts.buyerAccountId] as [string, string]] : []),
      ["Connection", "Upgrade"],
      ["Upgrade", "peerproxy-tunnel/1"],
      ["Content-Length", "0"],
    ];
    if (headers.some(([, v]) => BAD_HEADER_VALUE.test(v)))
      return resolve({ ok: false, failure: "transport", code: "ERR_INVALID_CHAR" });
    const requestHead = `POST ${url.pathname} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`;

    const pool = opts.reads;
    let socket: Socket | undefined;
    const s = settler(resolve, (r) => !r.ok && socket?.destroy(), opts.signal);
    if (s.aborted()) return s.done({ ok: false, failure: "aborted" });
    let connected = false;
    s.startTimer(opts.timeoutMs, () => ({ ok: false, failure: "timeout", connected }));

    // The answer: its head until the blank line, then (not a 101) its body.
    let head: Buffer = Buffer.alloc(0);
    let status = 0;
    let body = "";
    let bodyLeft = Number.POSITIVE_INFINITY;
    let tunnel = false;
    const refuse = () => {
      let parsed: { code?: unknown; reason?: unknown } = {};
      try {
        parsed = JSON.parse(body) as typeof parsed;
      } catch {}
      s.done({
        ok: false,
        failure: "refused",
        status,
        ...(typeof parsed.code === "string" ? { code: parsed.code } : {}),
        ...(typeof parsed.reason === "string" ? { reason: parsed.reason } : {}),
      });
    };
    /** Answer bytes before the tunnel (read synchronously: a pooled read's buffer goes back after). */
    const answer = (bytes: Buffer) => {
      if (status !== 0) {
        const take = Math.min(bytes.length, bodyLeft);
        if (body.length < MAX_BODY) body += bytes.toString("utf8", 0, Math.min(take, MAX_BODY - body.length));
        bodyLeft -= take;
        if (bodyLeft <= 0) refuse();
        return;
      }
      head = head.length ? Buffer.concat([head, bytes]) : Buffer.from(bytes);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > MAX_ANSWER_HEAD)
          s.done({ ok: false, failure: "transport", code: "HPE_HEADER_OVERFLOW" });
        return;
      }
      const text = head.toString("latin1", 0, end);
      const m = /^HTTP\/1\.[01] (\d{3})(?: [^\r\n]*)?(?:\r\n|$)/.exec(text);
      if (!m) return s.done({ ok: false, failure: "transport", code: "HPE_INVALID_CONSTANT" });
      status = Number(m[1]);
      const rest = head.subarray(end + 4);
      if (status === 101) {
        tunnel = true;
        socket!.pause();
        return s.done({
          ok: true,
          socket: socket!,
          head: Buffer.from(rest),
          ...(pool ? { onRead: (sink: PooledSink) => setSink(sink) } : {}),
        });
      }
      const length = /\r\ncontent-length:[ \t]*(\d+)[ \t]*(?:\r\n|$)/i.exec(text);
      if (length) bodyLeft = Number(length[1]);
      if (bodyLeft === 0) return refuse();
      if (rest.length) answer(rest);
    };

    // After a 101 a pooled socket's reads go to the tunnel's sink; any before it is set wait, copied.
    let sink: PooledSink | undefined;
    let waiting: Buffer[] = [];
    const setSink = (fn: PooledSink) => {
      sink = fn;
      for (const b of waiting.splice(0)) fn(b, () => {});
    };
    // The next read goes into a buffer of its own only when this one came back full (a busy socket).
    let busy = false;
    const nextBuffer = () => (busy ? pool!.take() : pool!.shared);
    const onPooledRead = (n: number, buf: Buffer): boolean => {
      busy = n === buf.length;
      const own = buf !== pool!.shared;
      if (tunnel && sink && own) sink(buf.subarray(0, n), () => pool!.give(buf));
      else if (tunnel) {
        const copy = Buffer.from(buf.subarray(0, n));
        if (own) pool!.give(buf);
        if (sink) sink(copy, () => {});
        else waiting.push(copy);
      } else {
        answer(buf.subarray(0, n));
        if (own) pool!.give(buf);
      }
      return true;
    };
    const onData = (bytes: Buffer) => {
      if (tunnel) return;
      answer(bytes);
      if (tunnel) socket!.off("data", onData);
    };

    socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(url.port || 80),
      ...(pool ? { onread: { buffer: nextBuffer, callback: onPooledRead } } : {}),
    });
    socket.setNoDelay(true);
    socket.once("connect", () => (connected = true));
    if (!pool) socket.on("data", onData);
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (!tunnel) s.done({ ok: false, failure: "transport", code: err.code ?? "error" });
    });
    socket.on("close", () => {
      waiting = [];
      if (tunnel) return;
      // An answer cut short: its body so far when the head was whole, else a hang-up as node:http names it.
      if (status !== 0) refuse();
      else s.done({ ok: false, failure: "transport", code: "ECONNRESET" });
    });
    socket.write(requestHead);
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
