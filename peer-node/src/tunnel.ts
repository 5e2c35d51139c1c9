import { connect, type Socket } from "node:net";
import {
  dataFrames,
  encodeFrame,
  encodeWindow,
  FRAME_DATA,
  FRAME_END,
  type GrowingWindow,
  windowGrowth as grow,
  INITIAL_WINDOW,
  windowArrived,
} from "../../shared/frame.ts";
import type { ControlPayload, PeerToRelay, TunnelFailureReason } from "../../shared/messages.ts";
import { type Lookup, resolveTarget } from "./egress.ts";

/** What a tunnel needs from the relay socket that carries it. */
export interface TunnelCarrier {
  /**
   * Sends one binary message. `frame` may be a view of the shared read area (below): the carrier
   * copies it or is done with it before returning (the SDK's WebSocket copies every frame while
   * masking it, socket.ts).
   */
  sendBinary(frame: Uint8Array): void;
  sendControl<T extends PeerToRelay["type"]>(type: T, payload: ControlPayload<T>): void;
  log(line: string): void;
  verbose(line: string): void;
  /** The tunnel ended (either side); the carrier forgets it. */
  done(sessionId: string, outcome: TunnelOutcome): void;
}

export type TunnelOutcome =
  | { kind: "failed"; reason: TunnelFailureReason; detail: string }
  | { kind: "closed"; up: number; down: number; error?: string };

export interface TunnelOptions {
  allowPrivateTargets: boolean;
  connectTimeoutMs: number;
  lookup?: Lookup;
}

/** Window updates go out once this much of the relay's data reached the target, so the relay never idles on credit. */
const WINDOW_UPDATE_STEP = INITIAL_WINDOW / 4;

/**
 * Relay -> target windows grow for a fast tunnel by the relay's rule the other way
 * (shared/frame.ts windowGrowth: a whole window that the target took at once doubles), up to
 * WINDOW_MAX. All tunnels of the process together grow at most `windowGrowth.budget`, given back
 * as tunnels end, so a fleet process's memory stays bounded however many tunnels run fast.
 */
export const WINDOW_MAX = 8 * 1024 * 1024;
export const windowGrowth = { grown: 0, budget: 64 * 1024 * 1024 };

/**
 * Every target socket of the process reads into one area, behind room for a data frame's header
 * (type, length, sessionId: at most 2 + 255 bytes). A read is framed in place and sent, or what the
 * relay's credit does not cover is copied out to wait, before the read callback returns, and libuv
 * fills the area only just before it calls that callback: one area serves every socket, and a read
 * costs no allocation and no copy of its own (the WebSocket's masking copy is the only one).
 */
const FRAME_ROOM = 2 + 255;
const READ_BYTES = 64 * 1024;
const readArea = Buffer.allocUnsafeSlow(FRAME_ROOM + READ_BYTES);
const readInto = readArea.subarray(FRAME_ROOM);
const utf8 = new TextEncoder();

function failureReason(code: string | undefined): TunnelFailureReason {
  if (code === "ECONNREFUSED") return "connection_refused";
  if (code === "ETIMEDOUT" || code === "ETIMEOUT") return "timeout";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return "dns_failed";
  return "unknown";
}

/**
 * One relayed TCP session (flow-v1). Raw bytes both ways, never interpreted (TLS stays end to end).
 * Target -> relay: we spend the relay's credit and pause the target socket when it runs out.
 * Relay -> target: we grant credit back as the target socket drains, so memory per session stays
 * bounded by the window on both sides.
 */
export class Tunnel {
  readonly sessionId: string;
  readonly target: string;
  #carrier: TunnelCarrier;
  #opts: TunnelOptions;
  #host: string;
  #port: number;
  #tcp: Socket | undefined;
  #startedAt = Date.now();
  /** Bytes the relay will still accept from us (its window). */
  #sendCredit = INITIAL_WINDOW;
  /** Target bytes waiting for relay credit; bounded by one read chunk because we pause. */
  #pending: Buffer[] = [];
  /** Relay bytes that arrived before the TCP connect finished. */
  #early: Uint8Array[] = [];
  #drained = 0;
  /** The credit we keep the relay at (INITIAL_WINDOW, grown for a fast tunnel), and what has arrived of it. */
  #recv: GrowingWindow = { window: INITIAL_WINDOW, epochAt: 0, epochBytes: 0 };
  #targetEnded = false;
  #endSent = false;
  #tcpClosed = false;
  #finished = false;
  #connected = false;
  #relayEnded = false;
  #closeError: string | undefined;
  #up = 0;
  #down = 0;
  /** the sessionId's bytes, as every data frame's header carries them */
  #sid: Uint8Array;

  constructor(carrier: TunnelCarrier, sessionId: string, host: string, port: number, opts: TunnelOptions) {
    this.#carrier = carrier;
    this.sessionId = sessionId;
    this.#host = host;
    this.#port = port;
    this.#opts = opts;
    this.target = `${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;
    this.#sid = utf8.encode(sessionId);
  }

  /** Resolves, checks and connects; every outcome is reported to the relay, nothing throws. */
  async open(): Promise<void> {
    try {
      await this.#open();
    } catch (err) {
      this.#fail("unknown", (err as Error).message);
    }
  }

  async #open(): Promise<void> {
    this.#carrier.verbose(`[TUNNEL_CONNECT] session=${this.sessionId} target=${this.target}`);
    if (!Number.isInteger(this.#port) || this.#port < 1 || this.#port > 65535)
      return this.#fail("unknown", `bad port ${this.#port}`);
    // getaddrinfo has no deadline of its own; the relay's connect timeout would otherwise expire
    // without ever hearing why.
    let lookupTimer: NodeJS.Timeout | undefined;
    const resolved = await Promise.race([
      resolveTarget(this.#host, { allowPrivate: this.#opts.allowPrivateTargets, lookup: this.#opts.lookup }),
      new Promise<{ ok: false; reason: "timeout"; detail: string }>((resolve) => {
        lookupTimer = setTimeout(
          () => resolve({ ok: false, reason: "timeout", detail: "dns lookup timed out" }),
          this.#opts.connectTimeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(lookupTimer));
    if (this.#finished) return;
    if (!resolved.ok) return this.#fail(resolved.reason, resolved.detail);

    // Connect to the address we checked, not the name: no second lookup that could answer differently.
    const tcp = connect({
      host: resolved.address,
      port: this.#port,
      family: resolved.family,
      allowHalfOpen: true,
      onread: { buffer: readInto, callback: (n: number) => this.#onTargetRead(n) },
    });
    this.#tcp = tcp;
    const timer = setTimeout(() => {
      tcp.destroy(Object.assign(new Error("connect timeout"), { code: "ETIMEDOUT" }));
    }, this.#opts.connectTimeoutMs);
    tcp.once("connect", () => {
      clearTimeout(timer);
      this.#connected = true;
      tcp.setNoDelay(true);
      if (this.#finished) return void tcp.destroy();
      this.#carrier.sendControl("tunnel_connected", { sessionId: this.sessionId });
      this.#carrier.verbose(
        `[TCP_OPEN_OK] session=${this.sessionId} target=${this.target} addr=${resolved.address} ms=${Date.now() - this.#startedAt}`,
      );
      for (const chunk of this.#early.splice(0)) this.#writeToTarget(chunk);
      if (this.#relayEnded) tcp.end();
      tcp.on("end", () => {
        this.#targetEnded = true;
        this.#flush();
      });
      tcp.on("close", () => {
        this.#tcpClosed = true;
        this.#flush();
      });
    });
    tcp.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (this.#connected) {
        this.#closeError = err.code ?? err.message;
        return;
      }
      this.#fail(failureReason(err.code), err.code ?? err.message);
    });
  }

  #fail(reason: TunnelFailureReason, detail: string): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#tcp?.destroy();
    const durationMs = Date.now() - this.#startedAt;
    this.#carrier.sendControl("tunnel_open_failed", {
      sessionId: this.sessionId,
      reason,
      detail,
      durationMs,
    });
    this.#carrier.verbose(
      `[TCP_OPEN_FAIL] session=${this.sessionId} target=${this.target} reason=${reason} detail=${detail}`,
    );
    this.#carrier.done(this.sessionId, { kind: "failed", reason, detail });
  }

  /**
   * `n` target bytes in the shared read area: sent as one frame built in place when nothing waits
   * and the credit covers them, else (the part not covered) copied out to wait for credit.
   */
  #onTargetRead(n: number): boolean {
    if (this.#finished) return false;
    this.#up += n;
    let sent = 0;
    if (this.#pending.length === 0 && this.#sendCredit > 0) {
      sent = Math.min(n, this.#sendCredit);
      this.#sendCredit -= sent;
      this.#carrier.sendBinary(this.#frameInPlace(sent));
    }
    if (sent === n) return true;
    this.#pending.push(Buffer.from(readInto.subarray(sent, n)));
    this.#flush();
    return true;
  }

  /** A data frame of the first `n` bytes of the read area, its header written in the room before them. */
  #frameInPlace(n: number): Uint8Array {
    const sid = this.#sid;
    if (sid.length < 1 || sid.length > 255)
      return encodeFrame(FRAME_DATA, this.sessionId, readInto.subarray(0, n));
    const start = FRAME_ROOM - 2 - sid.length;
    readArea[start] = FRAME_DATA;
    readArea[start + 1] = sid.length;
    readArea.set(sid, start + 2);
    return readArea.subarray(start, FRAME_ROOM + n);
  }

  /** Sends what the relay's credit allows; the rest waits with the target socket paused. */
  #flush(): void {
    if (this.#finished) return;
    while (this.#pending.length > 0 && this.#sendCredit > 0) {
      let chunk = this.#pending[0]!;
      if (chunk.length > this.#sendCredit) {
        this.#pending[0] = chunk.subarray(this.#sendCredit);
        chunk = chunk.subarray(0, this.#sendCredit);
      } else this.#pending.shift();
      this.#sendCredit -= chunk.length;
      for (const frame of dataFrames(this.sessionId, chunk)) this.#carrier.sendBinary(frame);
    }
    const tcp = this.#tcp;
    if (this.#pending.length > 0) {
      if (tcp && !tcp.isPaused()) tcp.pause();
      return;
    }
    if (tcp?.isPaused()) tcp.resume();
    if (this.#targetEnded && !this.#endSent) {
      this.#endSent = true;
      this.#carrier.sendBinary(encodeFrame(FRAME_END, this.sessionId));
    }
    if (this.#tcpClosed) this.#finish(true, this.#closeError);
  }

  #writeToTarget(payload: Uint8Array): void {
    const tcp = this.#tcp;
    if (!tcp || tcp.destroyed || tcp.writableEnded) return;
    const n = payload.length;
    this.#down += n;
    windowArrived(this.#recv, n, Date.now());
    tcp.write(payload, () => {
      this.#drained += n;
      // Bigger windows grant in bigger steps: window updates stay about eight per window.
      if (this.#drained >= Math.max(WINDOW_UPDATE_STEP, this.#recv.window / 8) && !this.#finished) {
        this.#carrier.sendBinary(encodeWindow(this.sessionId, this.#drained + this.#grown(tcp)));
        this.#drained = 0;
      }
    });
  }

  /** Extra credit when a whole window arrived fast and the target kept up with it (see WINDOW_MAX). */
  #grown(tcp: Socket): number {
    const budgetLeft = windowGrowth.budget - windowGrowth.grown;
    const extra = grow(this.#recv, Date.now(), tcp.writableLength === 0, WINDOW_MAX, budgetLeft);
    windowGrowth.grown += extra;
    return extra;
  }

  /** The window this tunnel keeps the relay at (tests read it). */
  get window(): number {
    return this.#recv.window;
  }

  /** Data frame (or legacy tunnel_data) from the relay. */
  onRelayData(payload: Uint8Array): void {
    if (this.#finished || payload.length === 0) return;
    if (!this.#connected) this.#early.push(Uint8Array.from(payload));
    else this.#writeToTarget(payload);
  }

  /** The customer finished sending: half-close towards the target. */
  onRelayEnd(): void {
    if (this.#finished) return;
    if (!this.#connected) this.#relayEnded = true;
    else this.#tcp?.end();
  }

  /** The relay granted more credit. */
  onRelayWindow(credit: number): void {
    this.#sendCredit += credit;
    this.#flush();
  }

  /** The relay closed the session (tunnel_close / close frame) or the socket went away. */
  close(): void {
    this.#finish(false);
  }

  #finish(tellRelay: boolean, error?: string): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#tcp?.destroy();
    this.#pending = [];
    this.#early = [];
    windowGrowth.grown -= this.#recv.window - INITIAL_WINDOW;
    this.#recv.window = INITIAL_WINDOW;
    if (tellRelay)
      this.#carrier.sendControl("tunnel_closed", { sessionId: this.sessionId, ...(error ? { error } : {}) });
    this.#carrier.verbose(`[TUNNEL_CLOSED] session=${this.sessionId} up=${this.#up} down=${this.#down}`);
    this.#carrier.done(this.sessionId, { kind: "closed", up: this.#up, down: this.#down, error });
  }
}
