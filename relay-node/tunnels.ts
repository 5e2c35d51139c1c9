import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import {
  encodeFrame,
  encodeWindow,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_END,
  INITIAL_WINDOW,
  windowArrived,
  windowGrowth,
} from "../shared/frame.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { runScript } from "../shared/lua/script.ts";
import { tunnelFailure } from "../shared/lua/scripts.gen.ts";
import {
  type ControlPayload,
  control,
  type RelayToPeer,
  TUNNEL_FAILURE_REASONS,
  type TunnelFailureReason,
} from "../shared/messages.ts";
import { bump } from "./metrics.ts";
import type { Device, PeerConn, RelayState, Session } from "./state.ts";
import { OPEN } from "./wire.ts";

/** Largest tunnel payload per frame: big enough for throughput, small enough to interleave sessions. */
const CHUNK_BYTES = 64 * 1024 - 64;
/** Legacy peers: pause customer reads while a WebSocket holds more than this unsent. */
const WS_HIGH_WATER = 1024 * 1024;
const WS_LOW_WATER = 256 * 1024;
/** Legacy peers: pause the whole WebSocket while a slow customer holds more than this unsent. */
const GW_HIGH_WATER = 1024 * 1024;
/** flow-v1: grant credit back in steps, not per frame, to keep window updates rare. */
const GRANT_STEP = 64 * 1024;
/*
 * flow-v1 window growth (peer -> customer, the direction most bytes go; the rule is shared/frame.ts
 * windowGrowth): a window the customer kept up with (nothing waits in our socket buffer) doubles,
 * up to TUNNEL_WINDOW_MAX_BYTES. All open sessions together hold at most TUNNEL_WINDOW_BUDGET_BYTES
 * beyond their initial windows; a session returns its share when it ends.
 */
/** After we end a customer socket, how long it may linger unread before we cut it. */
const LINGER_MS = 30_000;

export const SWITCHING_PROTOCOLS =
  "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: peerproxy-tunnel/1\r\n\r\n";

/** Answers a tunnel request with a JSON error (docs/internal.md) and closes the customer socket. */
export function respondError(gw: Socket, status: number, body: Record<string, unknown>) {
  const text = JSON.stringify(body);
  if (gw.destroyed) return;
  gw.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
  );
  setTimeout(() => gw.destroy(), 5_000).unref();
}

function pickConn(device: Device): PeerConn | undefined {
  let open = [...device.conns].filter((c) => c.ws.readyState === OPEN);
  // A socket that has not sent device_info yet would get the wrong framing (a flow-v1 peer would
  // stall waiting for window updates), so prefer the ones that have.
  const announced = open.filter((c) => c.infoReceived);
  if (announced.length > 0) open = announced;
  if (open.length === 0) return undefined;
  const start = device.nextConn++ % open.length;
  let best: PeerConn | undefined;
  for (let i = 0; i < open.length; i++) {
    const c = open[(start + i) % open.length]!;
    if (!best || (c.sessions?.size ?? 0) < (best.sessions?.size ?? 0)) best = c;
  }
  return best;
}

function sendControl<T extends RelayToPeer["type"]>(conn: PeerConn, type: T, payload: ControlPayload<T>) {
  if (conn.ws.readyState === OPEN) conn.ws.send(control(type, payload));
}

function sendData(conn: PeerConn, sessionId: string, bytes: Buffer, onWritten: () => void) {
  if (conn.ws.readyState !== OPEN) return;
  if (conn.binary) conn.ws.sendBinary(encodeFrame(FRAME_DATA, sessionId), bytes, onWritten);
  else conn.ws.send(control("tunnel_data", { sessionId, data: bytes.toString("base64") }), onWritten);
}

function sendPeerClose(conn: PeerConn, sessionId: string) {
  if (conn.ws.readyState !== OPEN) return;
  if (conn.binary) conn.ws.send(encodeFrame(FRAME_CLOSE, sessionId));
  else sendControl(conn, "tunnel_close", { sessionId });
}

function noteBuffered(state: RelayState, s: Session) {
  const held = s.gw.writableLength + s.pendingBytes;
  if (held > s.maxBuffered) s.maxBuffered = held;
  if (held > state.metrics.maxSessionBuffered) state.metrics.maxSessionBuffered = held;
}

/** Legacy peers: resume sessions that waited for this WebSocket's send buffer to drain. */
function onWsWritten(state: RelayState, conn: PeerConn) {
  if (!conn.waitingForWsDrain?.size || conn.ws.bufferedAmount > WS_LOW_WATER) return;
  const waiting = [...conn.waitingForWsDrain];
  conn.waitingForWsDrain.clear();
  for (const s of waiting) pumpToPeer(state, s);
}

/**
 * Asks a device to open host:port and answers the gateway's upgrade: 101 once the peer confirms
 * (or its data arrives first), else a JSON error. The customer socket stays paused until then.
 */
export function openTunnel(
  state: RelayState,
  device: Device,
  target: { host: string; port: number },
  gw: Socket,
  head: Buffer,
  meta: { requestId?: string; billable?: boolean } = {},
) {
  const requestId = meta.requestId ?? "";
  const conn = pickConn(device);
  if (!conn) {
    respondError(gw, 404, { code: "device_not_here" });
    return;
  }
  gw.pause();
  gw.setNoDelay(true);
  const id = randomHex(8);
  const s: Session = {
    id,
    conn,
    target: `${target.host}:${target.port}`,
    gw,
    state: "connecting",
    flow: conn.flow,
    openedAt: state.now(),
    sendCredit: INITIAL_WINDOW,
    peerCredit: INITIAL_WINDOW,
    drainedSinceGrant: 0,
    window: INITIAL_WINDOW,
    epochAt: 0,
    epochBytes: 0,
    pendingToPeer: head.length ? [head] : [],
    pendingBytes: head.length,
    gwEnded: false,
    endSent: false,
    peerEnded: false,
    maxBuffered: 0,
    requestId,
    billable: meta.billable ?? true,
    log: state.log.child({ requestId: requestId || undefined, deviceId: device.id, sessionId: id }),
  };
  state.sessions.set(s.id, s);
  state.heapGrowth.update(state.sessions.size);
  conn.sessions ??= new Map();
  conn.sessions.set(s.id, s);

  const timer = setTimeout(() => {
    sendPeerClose(conn, s.id);
    s.settle?.({ ok: false, status: 504, body: { code: "connect_timeout" } });
  }, state.config.CONNECT_TIMEOUT_MS);

  s.settle = (outcome) => {
    clearTimeout(timer);
    s.settle = undefined;
    if (outcome.ok) {
      startPiping(state, s);
      return;
    }
    bump(state.metrics.tunnelFailures, outcome.body.reason ?? outcome.body.code);
    state.metrics.tunnelSetupSeconds.observe({ result: "failed" }, (state.now() - s.openedAt) / 1000);
    s.log.warn(
      { status: outcome.status, code: outcome.body.code, reason: outcome.body.reason },
      "tunnel failed",
    );
    forget(state, s);
    respondError(gw, outcome.status, outcome.body);
  };

  gw.on("error", () => {});
  gw.on("close", () => {
    if (s.state === "connecting") {
      // The gateway gave up while the peer was still dialling: tell the peer to drop it.
      clearTimeout(timer);
      s.settle = undefined;
      sendPeerClose(conn, s.id);
      forget(state, s);
    } else closeSession(state, s, { notifyPeer: true });
  });

  sendControl(conn, "tunnel_connect", { sessionId: s.id, host: target.host, port: target.port });
}

function startPiping(state: RelayState, s: Session) {
  s.state = "open";
  state.metrics.tunnelsOpened++;
  state.metrics.tunnelSetupSeconds.observe({ result: "ok" }, (state.now() - s.openedAt) / 1000);
  s.gw.write(SWITCHING_PROTOCOLS);
  s.gw.on("data", (chunk: Buffer) => fromCustomer(state, s, chunk));
  s.gw.on("end", () => {
    s.gwEnded = true;
    pumpToPeer(state, s);
  });
  pumpToPeer(state, s);
}

function fromCustomer(state: RelayState, s: Session, chunk: Buffer) {
  if (s.state !== "open") return;
  state.metrics.bytesDown += chunk.length;
  if (s.billable) state.counters.add(s.conn.device.id, 0, chunk.length);
  s.pendingToPeer.push(chunk);
  s.pendingBytes += chunk.length;
  pumpToPeer(state, s);
}

/** Moves customer bytes to the peer as far as credit (flow-v1) or the WebSocket buffer allows. */
function pumpToPeer(state: RelayState, s: Session) {
  if (s.state !== "open") return;
  const conn = s.conn;
  while (s.pendingBytes > 0) {
    if (s.flow && s.sendCredit <= 0) break;
    if (!s.flow && conn.ws.bufferedAmount > WS_HIGH_WATER) break;
    const head = s.pendingToPeer[0]!;
    const n = Math.min(head.length, CHUNK_BYTES, s.flow ? s.sendCredit : Number.POSITIVE_INFINITY);
    const piece = head.subarray(0, n);
    if (n === head.length) s.pendingToPeer.shift();
    else s.pendingToPeer[0] = head.subarray(n);
    s.pendingBytes -= n;
    if (s.flow) s.sendCredit -= n;
    sendData(conn, s.id, piece, () => onWsWritten(state, conn));
  }
  noteBuffered(state, s);
  const blocked = s.pendingBytes > 0 || (!s.flow && conn.ws.bufferedAmount > WS_HIGH_WATER);
  if (blocked) {
    s.gw.pause();
    if (!s.flow) {
      conn.waitingForWsDrain ??= new Set();
      conn.waitingForWsDrain.add(s);
    }
    return;
  }
  if (!s.gwEnded) {
    s.gw.resume();
    return;
  }
  // The customer finished sending and everything reached the peer.
  if (s.flow) {
    if (!s.endSent && conn.ws.readyState === OPEN) conn.ws.send(encodeFrame(FRAME_END, s.id));
    s.endSent = true;
    if (s.peerEnded) closeSession(state, s, { notifyPeer: true });
  } else {
    // Legacy peers have no half close; the contract is that ending the socket ends the session.
    closeSession(state, s, { notifyPeer: true });
  }
}

/**
 * One data frame's payload in the parts it arrived in (empty parts allowed): each is taken as a
 * frame of its own, and the gateway leg stays corked until the last, so the parts leave in one
 * writev rather than a write each (a 64 KiB frame always spans two reads).
 */
export function fromPeerParts(state: RelayState, conn: PeerConn, sessionId: string, parts: Buffer[]) {
  const gw = state.sessions.get(sessionId)?.gw;
  gw?.cork();
  for (const part of parts) fromPeer(state, conn, sessionId, part);
  gw?.uncork();
}

/** Bytes from the peer for a session (binary 0x01 or legacy tunnel_data). */
export function fromPeer(state: RelayState, conn: PeerConn, sessionId: string, bytes: Buffer) {
  const s = state.sessions.get(sessionId);
  // Late bytes for a session we already closed are normal; bytes for another device's session are not ours.
  if (!s || s.conn.device !== conn.device) return;
  // The optimistic rule: a peer that never confirms is open once its data flows.
  if (s.state === "connecting") s.settle?.({ ok: true });
  if (s.state !== "open" || bytes.length === 0) return;
  if (s.flow) {
    s.peerCredit -= bytes.length;
    if (s.peerCredit < 0) {
      // Past its window the peer could grow our buffer without bound: that is a protocol violation.
      state.metrics.frameErrors++;
      s.log.warn("tunnel window_exceeded");
      closeSession(state, s, { notifyPeer: true, abort: true });
      return;
    }
  }
  state.metrics.bytesUp += bytes.length;
  if (s.billable) state.counters.add(conn.device.id, bytes.length, 0);
  const n = bytes.length;
  if (s.flow) {
    windowArrived(s, n, state.now());
  }
  s.gw.write(bytes, (err) => {
    if (err || !s.flow) return;
    s.drainedSinceGrant += n;
    grantIfDue(state, s);
  });
  noteBuffered(state, s);
  if (!s.flow && s.gw.writableLength > GW_HIGH_WATER && !conn.pausedBy?.has(s)) {
    // Socket-level backpressure: a legacy peer can only be slowed as a whole.
    conn.pausedBy ??= new Set();
    conn.pausedBy.add(s);
    conn.ws.pause();
    s.gw.once("drain", () => releaseWs(conn, s));
  }
}

function releaseWs(conn: PeerConn, s: Session) {
  if (!conn.pausedBy?.delete(s)) return;
  if (conn.pausedBy.size === 0 && conn.ws.readyState === OPEN) conn.ws.resume();
}

function grantIfDue(state: RelayState, s: Session) {
  if (s.state !== "open" || s.drainedSinceGrant === 0) return;
  // Bigger windows grant in bigger steps: window updates stay about eight per window, and a tunnel
  // that moves a small answer costs none. The peer cannot run dry waiting: its credit and what
  // is buffered or drained since the last grant add up to the window, so a peer down to nothing
  // has a whole window drained or on its way to the customer, and each write that lands calls here.
  if (s.drainedSinceGrant < Math.max(GRANT_STEP, s.window / 8)) return;
  const grant = s.drainedSinceGrant + grownWindow(state, s);
  s.drainedSinceGrant = 0;
  s.peerCredit += grant;
  if (s.conn.ws.readyState === OPEN) s.conn.ws.send(encodeWindow(s.id, grant));
}

/** Extra credit for a tunnel that moved its whole window fast to a customer who kept up; else 0. */
function grownWindow(state: RelayState, s: Session): number {
  const { TUNNEL_WINDOW_MAX_BYTES: max, TUNNEL_WINDOW_BUDGET_BYTES: budget } = state.config;
  const extra = windowGrowth(s, state.now(), s.gw.writableLength === 0, max, budget - state.grownWindowBytes);
  state.grownWindowBytes += extra;
  if (extra > 0) state.metrics.windowsGrown++;
  return extra;
}

export function onPeerWindow(state: RelayState, conn: PeerConn, sessionId: string, credit: number) {
  const s = state.sessions.get(sessionId);
  if (!s || s.conn.device !== conn.device || !s.flow) return;
  s.sendCredit += credit;
  pumpToPeer(state, s);
}

/** flow-v1 half close from the peer: the target finished sending. */
export function onPeerEnd(state: RelayState, conn: PeerConn, sessionId: string) {
  const s = state.sessions.get(sessionId);
  if (!s || s.conn.device !== conn.device) return;
  if (s.state === "connecting") s.settle?.({ ok: true });
  s.peerEnded = true;
  s.gw.end();
  if (s.gwEnded && s.pendingBytes === 0) closeSession(state, s, { notifyPeer: true });
}

export function onPeerConnected(state: RelayState, conn: PeerConn, sessionId: string) {
  const s = state.sessions.get(sessionId);
  if (s && s.conn.device === conn.device && s.state === "connecting") s.settle?.({ ok: true });
}

export function onPeerOpenFailed(
  state: RelayState,
  conn: PeerConn,
  sessionId: string,
  reason: unknown,
  detail: unknown,
) {
  const s = state.sessions.get(sessionId);
  if (!s || s.conn.device !== conn.device) return;
  if (s.state !== "connecting") {
    closeSession(state, s, { notifyPeer: false });
    return;
  }
  const known: TunnelFailureReason = (TUNNEL_FAILURE_REASONS as readonly unknown[]).includes(reason)
    ? (reason as TunnelFailureReason)
    : "unknown";
  const body: { code: string; reason: string; detail?: string } = {
    code: "tunnel_open_failed",
    reason: known,
  };
  if (typeof detail === "string" && detail) body.detail = detail.slice(0, 200);
  s.settle?.({ ok: false, status: 502, body });
}

/** tunnel_closed from the peer (or a 0x03 frame from a liberal one). */
export function onPeerClosed(state: RelayState, conn: PeerConn, sessionId: string) {
  const s = state.sessions.get(sessionId);
  if (!s || s.conn.device !== conn.device) return;
  if (s.state === "connecting") {
    s.settle?.({ ok: false, status: 502, body: { code: "tunnel_open_failed", reason: "unknown" } });
    return;
  }
  closeSession(state, s, { notifyPeer: false });
}

/** The peer's socket went away: every session on it ends. */
export function onConnGone(state: RelayState, conn: PeerConn) {
  // Live tunnels died with the socket: tell the prober's circuit breaker directly. (The gateway
  // may not see the reset below: a socket paused by backpressure reads it as a clean end.)
  if (!conn.sessions) return;
  if ([...conn.sessions.values()].some((s) => s.state !== "connecting"))
    void reportPeerDrop(state, conn.device.id);
  for (const s of [...conn.sessions.values()]) {
    if (s.state === "connecting") {
      s.settle?.({
        ok: false,
        status: 502,
        body: { code: "tunnel_open_failed", reason: "unknown", detail: "peer socket closed" },
      });
    } else closeSession(state, s, { notifyPeer: false, reset: true });
  }
}

function forget(state: RelayState, s: Session) {
  if (s.state !== "closed") state.grownWindowBytes -= s.window - INITIAL_WINDOW;
  s.state = "closed";
  state.sessions.delete(s.id);
  state.heapGrowth.update(state.sessions.size);
  s.conn.sessions?.delete(s.id);
  s.conn.waitingForWsDrain?.delete(s);
  releaseWs(s.conn, s);
}

/**
 * Ends an open session on both sides. The customer socket is ended (pending bytes still flush) or,
 * with abort, destroyed.
 */
export function closeSession(
  state: RelayState,
  s: Session,
  opts: { notifyPeer: boolean; abort?: boolean; reset?: boolean },
) {
  if (s.state === "closed") return;
  if (s.state === "connecting") {
    s.settle?.({ ok: false, status: 503, body: { code: "draining" } });
    return;
  }
  forget(state, s);
  if (opts.notifyPeer) sendPeerClose(s.conn, s.id);
  // The peer vanished mid-stream: a TCP reset, so the gateway can tell it from a target's clean
  // end and report it to the circuit breaker.
  if (opts.reset && !s.gw.destroyed) s.gw.resetAndDestroy();
  else if (opts.abort) s.gw.destroy();
  else if (!s.gw.destroyed) {
    // The timer holds the socket alone, not the session (its buffers and peer state), and goes
    // as soon as the gateway closes its side: an ended tunnel costs nothing after that.
    const gw = s.gw;
    // Often already ended (the peer's end came first): a second end() builds an error to drop.
    if (!gw.writableEnded) gw.end();
    const cut = setTimeout(() => gw.destroy(), LINGER_MS).unref();
    gw.once("close", () => clearTimeout(cut));
  }
}

async function reportPeerDrop(state: RelayState, deviceId: string): Promise<void> {
  const entry = JSON.stringify({
    endpointId: deviceId,
    deviceId,
    kind: "peer",
    reason: "mid_stream_peer_gone",
    relayId: state.config.RELAY_ID,
    at: state.now(),
  });
  await runScript(state.redis, tunnelFailure, [keys.tunnelFailures()], [entry, 10_000]).catch((err) =>
    state.log.warn({ deviceId, err: (err as Error).message }, "breaker report_failed"),
  );
}
