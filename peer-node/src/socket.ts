import { randomFillSync } from "node:crypto";
import WebSocket from "ws";
import {
  decodeFrame,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_END,
  FRAME_WINDOW,
  MAX_FRAME_BYTES,
  windowCredit,
} from "../../shared/frame.ts";
import {
  CLOSE_BAD_TOKEN,
  CLOSE_NO_TOKEN,
  CLOSE_REDIRECT,
  control,
  receiveFromRelay,
} from "../../shared/messages.ts";
import { Backoff, type BackoffPolicy } from "./backoff.ts";
import type { Lookup } from "./egress.ts";
import { Tunnel, type TunnelCarrier, type TunnelOutcome } from "./tunnel.ts";
import { SDK_VERSION } from "./version.ts";

/**
 * ws's masking key, from a pool of random bytes as ws fills it, but never all zero: ws sends a
 * frame with a zero key without copying it, and tunnel frames are views of a read area that is
 * reused once sendBinary returns (tunnel.ts). 2^-32 of keys are redrawn, which no party can use.
 */
const maskPool = Buffer.alloc(8192);
let maskAt = maskPool.length;
function nonZeroMask(mask: Buffer): void {
  do {
    if (maskAt + 4 > maskPool.length) {
      randomFillSync(maskPool);
      maskAt = 0;
    }
    maskPool.copy(mask, 0, maskAt, maskAt + 4);
    maskAt += 4;
  } while ((mask[0]! | mask[1]! | mask[2]! | mask[3]!) === 0);
}

/** What one relay socket needs from the pool that owns it. */
export interface SocketPool {
  readonly deviceId: string;
  readonly country: string;
  readonly relayUrl: string;
  readonly jwt: string;
  readonly backoff: BackoffPolicy;
  readonly heartbeatMs: number;
  readonly connectTimeoutMs: number;
  readonly allowPrivateTargets: boolean;
  readonly lookup?: Lookup;
  log(line: string): void;
  verbose(line: string): void;
  /** A 4001/4002: resolves once the pool holds a token newer than `staleJwt` (or gave up). */
  renewIdentity(staleJwt: string): Promise<boolean>;
  onRedirect(target: unknown, reason: unknown): void;
  /**
   * A connect attempt ended before the relay's `connected` (refused, timed out, a non-auth
   * handshake status, closed early); `consecutive` counts them since this socket's last `connected`.
   */
  onConnectFailed(consecutive: number): void;
  emit(event: string, data: Record<string, unknown>): void;
}

/**
 * One of the device's N parallel relay sockets, with its own reconnect loop. Tunnels live on the
 * socket the relay opened them on and die with it.
 */
export class RelaySocket {
  readonly index: number;
  #pool: SocketPool;
  #ws: WebSocket | undefined;
  #backoff: Backoff;
  #timer: NodeJS.Timeout | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #tunnels = new Map<string, Tunnel>();
  #stopped = false;
  #moving = false;
  #openedAt = 0;
  #lastRx = 0;
  #authFailures = 0;
  #connectFailures = 0;
  /** This attempt got the relay's `connected`: a close after it is not a failed connect. */
  #reachedRelay = false;
  #closed: Promise<void> = Promise.resolve();

  constructor(pool: SocketPool, index: number) {
    this.#pool = pool;
    this.index = index;
    this.#backoff = new Backoff(pool.backoff);
  }

  get open(): boolean {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Connect attempts in a row that did not reach the relay's `connected`. */
  get connectFailures(): number {
    return this.#connectFailures;
  }

  get tunnels(): number {
    return this.#tunnels.size;
  }

  start(): void {
    this.#stopped = false;
    this.#connect();
  }

  /**
   * Follow a redirect or a failover: close with 4100 and reconnect at once to the pool's (new)
   * relay URL; failures counted against the old relay are forgotten.
   */
  moveToCurrentRelay(): void {
    if (this.#stopped) return;
    this.#connectFailures = 0;
    if (this.#ws && this.#ws.readyState !== WebSocket.CLOSED) {
      this.#moving = true;
      this.#ws.close(CLOSE_REDIRECT, "following relay_redirect");
    } else {
      clearTimeout(this.#timer);
      this.#connect();
    }
  }

  /** Graceful stop: no reconnect; resolves when the socket has closed (or after a grace period). */
  stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const ws = this.#ws;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      if (ws.readyState === WebSocket.OPEN) ws.close(1000, "peer stopping");
      else ws.terminate();
      const grace = new Promise<void>((r) => setTimeout(r, 3000).unref());
      return Promise.race([this.#closed, grace]).then(() => {
        if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
      });
    }
    return Promise.resolve();
  }

  #connect(): void {
    if (this.#stopped) return;
    const pool = this.#pool;
    const jwt = pool.jwt;
    // The token travels only as the subprotocol, never in the URL (URLs end up in logs).
    const ws = new WebSocket(pool.relayUrl, [`token.${jwt}`], {
      handshakeTimeout: pool.connectTimeoutMs,
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_BYTES,
      generateMask: nonZeroMask,
    });
    this.#ws = ws;
    let httpStatus: number | undefined;
    this.#reachedRelay = false;
    let resolveClosed = () => {};
    this.#closed = new Promise<void>((r) => {
      resolveClosed = r;
    });

    ws.on("open", () => {
      this.#openedAt = Date.now();
      this.#lastRx = Date.now();
      pool.log(`[CONNECTED]  device=${pool.deviceId} socket=${this.index}`);
      pool.emit("connected", { socket: this.index, relay: pool.relayUrl });
      this.#send(
        control("device_info", {
          country: pool.country,
          currentIp: "auto",
          protocol: "binary-v1",
          supportsRelayRedirect: true,
          sdkVersion: SDK_VERSION,
          capabilities: ["flow-v1"],
        }),
      );
      this.#heartbeat = setInterval(() => this.#tick(), pool.heartbeatMs);
    });

    ws.on("message", (data: Buffer, isBinary: boolean) => {
      this.#lastRx = Date.now();
      if (isBinary) this.#onBinary(data);
      else this.#onText(data.toString("utf8"));
    });

    ws.on("error", (err) => {
      const m = /Unexpected server response: (\d+)/.exec(err.message);
      if (m) httpStatus = Number(m[1]);
      pool.verbose(`[SOCKET_ERROR] socket=${this.index} ${err.message}`);
    });

    ws.on("close", (code: number, reason: Buffer) => {
      clearInterval(this.#heartbeat);
      const upMs = this.#openedAt ? Date.now() - this.#openedAt : 0;
      const wasOpen = this.#openedAt > 0;
      this.#openedAt = 0;
      for (const t of [...this.#tunnels.values()]) t.close();
      this.#tunnels.clear();
      resolveClosed();
      if (wasOpen || code !== 1006)
        pool.log(
          `[DISCONNECTED] device=${pool.deviceId} socket=${this.index} code=${code}${reason.length ? ` reason=${reason.toString("utf8").slice(0, 120)}` : ""}`,
        );
      pool.emit("disconnected", { socket: this.index, code });
      if (this.#stopped) return;
      if (this.#moving) {
        this.#moving = false;
        this.#connect();
        return;
      }
      const auth =
        code === CLOSE_NO_TOKEN || code === CLOSE_BAD_TOKEN || httpStatus === 401 || httpStatus === 403;
      if (auth) void this.#afterAuthClose(jwt, upMs);
      else {
        this.#authFailures = 0;
        this.#schedule(this.#backoff.next(upMs));
        // After scheduling: a failover moves this socket, which cancels the timer just set.
        if (!this.#reachedRelay) pool.onConnectFailed(++this.#connectFailures);
      }
    });
  }

  async #afterAuthClose(staleJwt: string, upMs: number): Promise<void> {
    const renewed = await this.#pool.renewIdentity(staleJwt);
    if (this.#stopped) return;
    // The first retry with a fresh token goes at once; a token refused again means backoff.
    const first = renewed && this.#authFailures === 0;
    this.#authFailures++;
    this.#schedule(first ? 0 : this.#backoff.next(upMs));
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    if (delayMs > 0) this.#pool.verbose(`[RECONNECT] socket=${this.index} in ${delayMs} ms`);
    this.#timer = setTimeout(() => this.#connect(), delayMs);
  }

  #tick(): void {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    // The relay acks every heartbeat; three silent intervals mean a dead path that TCP has not noticed.
    if (Date.now() - this.#lastRx > 3 * this.#pool.heartbeatMs) {
      this.#pool.log(`[STALE] socket=${this.index} no frame from the relay, reconnecting`);
      ws.terminate();
      return;
    }
    this.#send(control("heartbeat", { timestamp: Date.now() }));
  }

  #send(data: string | Uint8Array): void {
    const ws = this.#ws;
    if (ws?.readyState === WebSocket.OPEN) ws.send(data);
  }

  #onText(text: string): void {
    const received = receiveFromRelay(text);
    if (received.kind === "invalid") {
      this.#pool.verbose(`[CONTROL_ERROR] socket=${this.index} ${received.type ?? "-"} ${received.problem}`);
      return;
    }
    if (received.kind === "unknown") return; // unknown types are ignored, never fatal
    const msg = received.msg;
    switch (msg.type) {
      case "connected":
        this.#authFailures = 0;
        this.#connectFailures = 0;
        this.#reachedRelay = true;
        this.#pool.log(`[ACK] relay confirmed connection socket=${this.index}`);
        this.#pool.emit("ack", { socket: this.index, relayId: msg.payload.relayId, ip: msg.payload.ip });
        return;
      case "heartbeat_ack":
        return;
      case "tunnel_connect": {
        const { sessionId, host, port } = msg.payload;
        if (this.#tunnels.has(sessionId)) return;
        const tunnel = new Tunnel(this.#carrier, sessionId, host, port, {
          allowPrivateTargets: this.#pool.allowPrivateTargets,
          connectTimeoutMs: this.#pool.connectTimeoutMs,
          lookup: this.#pool.lookup,
        });
        this.#tunnels.set(sessionId, tunnel);
        this.#pool.emit("tunnel_connect", { sessionId, target: tunnel.target });
        void tunnel.open();
        return;
      }
      case "tunnel_close":
        this.#tunnels.get(msg.payload.sessionId)?.close();
        return;
      case "tunnel_data":
        // Legacy JSON path; a relay may still use it even though we speak binary-v1.
        this.#tunnels.get(msg.payload.sessionId)?.onRelayData(Buffer.from(msg.payload.data, "base64"));
        return;
      case "relay_redirect":
        this.#pool.onRedirect(msg.payload.relay, msg.payload.reason);
        return;
      case "rotate_ip_request":
        // A plain host cannot change its exit IP on request; say so instead of staying silent.
        this.#send(
          control("rotation_complete", {
            requestId: msg.payload.requestId,
            success: false,
            error: "not_supported",
          }),
        );
        return;
    }
  }

  #onBinary(data: Buffer): void {
    const decoded = decodeFrame(data);
    if (!decoded.ok) {
      this.#pool.verbose(`[FRAME_ERROR] socket=${this.index} ${decoded.error}`);
      return;
    }
    const { type, sessionId, payload } = decoded.frame;
    const tunnel = this.#tunnels.get(sessionId);
    if (!tunnel) return;
    if (type === FRAME_DATA) tunnel.onRelayData(payload);
    else if (type === FRAME_END) tunnel.onRelayEnd();
    else if (type === FRAME_CLOSE) tunnel.close();
    else if (type === FRAME_WINDOW) {
      const credit = windowCredit(decoded.frame);
      if (credit !== undefined) tunnel.onRelayWindow(credit);
    }
  }

  #carrier: TunnelCarrier = {
    sendBinary: (frame) => this.#send(frame),
    sendControl: (type, payload) => this.#send(control(type, payload)),
    log: (line) => this.#pool.log(line),
    verbose: (line) => this.#pool.verbose(line),
    done: (sessionId: string, outcome: TunnelOutcome) => {
      this.#tunnels.delete(sessionId);
      this.#pool.emit(outcome.kind === "failed" ? "tunnel_failed" : "tunnel_closed", {
        sessionId,
        ...outcome,
      });
    },
  };
}
