import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { type RawData, WebSocket, WebSocketServer } from "ws";
import { classifyIp } from "../shared/asn.ts";
import {
  decodeFrame,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_END,
  FRAME_WINDOW,
  MAX_FRAME_BYTES,
  windowCredit,
} from "../shared/frame.ts";
import type { PeerClaims } from "../shared/jwt.ts";
import { keys } from "../shared/keys.ts";
import { CLOSE_BAD_TOKEN, control, parseControl } from "../shared/messages.ts";
import { authenticatePeer, offeredProtocols, type PeerAuth } from "./auth.ts";
import { bump } from "./metrics.ts";
import { removePresence, touchPresence } from "./presence.ts";
import { maybeRedirect } from "./redirect.ts";
import type { Device, PeerConn, RelayState } from "./state.ts";
import {
  fromPeer,
  onConnGone,
  onPeerClosed,
  onPeerConnected,
  onPeerEnd,
  onPeerOpenFailed,
  onPeerWindow,
} from "./tunnels.ts";

export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_POLICY = 1008;
export const CLOSE_TOO_BIG = 1009;
export const CLOSE_TRY_LATER = 1013;

export interface PeerServer {
  /** Attach to the public HTTP server's "upgrade" event. */
  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Closes every peer socket with 1001 and waits (bounded) for them to go. */
  closeAll(timeoutMs: number): Promise<void>;
  stop(): void;
}

const authByRequest = new WeakMap<IncomingMessage, PeerAuth>();

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

export function createPeerServer(state: RelayState): PeerServer {
  const wss = new WebSocketServer({
    noServer: true,
    // ws closes with 1009 by itself when a message exceeds this; we count it as a frame error.
    maxPayload: MAX_FRAME_BYTES,
    perMessageDeflate: false,
    handleProtocols: (_offered, req) => authByRequest.get(req)?.protocol ?? false,
  });

  const idleTimer = setInterval(
    () => {
      const now = state.now();
      for (const device of state.devices.values()) {
        for (const conn of device.conns) {
          if (
            conn.ws.readyState === WebSocket.OPEN &&
            now - conn.lastFrameAt > state.config.IDLE_TIMEOUT_MS
          ) {
            conn.ws.close(1000, "idle timeout");
            // A dead peer never answers the close handshake.
            setTimeout(() => conn.ws.terminate(), 5_000).unref();
          }
        }
      }
    },
    Math.min(1_000, Math.max(50, state.config.IDLE_TIMEOUT_MS / 4)),
  );
  idleTimer.unref();

  const refuse = (ws: WebSocket, code: number, reason: string) => {
    bump(state.metrics.socketsRefused, reason);
    // Never the URL or the token: either may carry a credential.
    state.log(`peer refused code=${code} reason=${reason}`);
    ws.close(code, reason);
    setTimeout(() => ws.terminate(), 5_000).unref();
  };

  const accept = (ws: WebSocket, req: IncomingMessage, auth: Extract<PeerAuth, { ok: true }>) => {
    const claims = auth.claims;
    let device = state.devices.get(claims.sub);
    if (device) {
      // A newer generation means the device registered again: its older tokens are revoked, so
      // the sockets that still hold them go (and stop counting against the socket limit).
      for (const c of device.conns) {
        if (c.gen < claims.gen && c.ws.readyState === WebSocket.OPEN)
          refuse(c.ws, CLOSE_BAD_TOKEN, "revoked");
      }
      let open = 0;
      for (const c of device.conns) if (c.ws.readyState === WebSocket.OPEN) open++;
      if (open >= state.config.MAX_SOCKETS_PER_DEVICE) {
        refuse(ws, CLOSE_POLICY, "too_many_sockets");
        return;
      }
      device.accountId = claims.acct ?? device.accountId;
      device.ipType = str(claims.ipType) ?? device.ipType;
      const geo = str(claims.geo);
      if (geo) {
        device.country = geo.slice(0, 8);
        device.countryFromToken = true;
      }
    }
    if (!device) {
      device = {
        id: claims.sub,
        accountId: claims.acct ?? "",
        ipType: str(claims.ipType) ?? "",
        connectedAt: state.now(),
        country: (str(claims.geo) ?? "").slice(0, 8),
        countryFromToken: Boolean(str(claims.geo)),
        carrier: "",
        sdkVersion: "",
        protocol: "",
        capabilities: [],
        conns: new Set(),
        nextConn: 0,
      };
      state.devices.set(device.id, device);
    }
    const ip = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
    applySeenClass(state, device, ip, claims);
    const conn: PeerConn = {
      ws,
      device,
      ip,
      gen: claims.gen,
      binary: false,
      flow: false,
      supportsRedirect: false,
      infoReceived: false,
      lastFrameAt: state.now(),
      sessions: new Map(),
      waitingForWsDrain: new Set(),
      pausedBy: new Set(),
    };
    device.conns.add(conn);
    touchPresence(state, device);
    // A token that expires on an open socket ends it with 4002, so the peer refreshes its identity
    // (PROTOCOL.md section 2) instead of serving on a credential that is no longer valid.
    const expiresIn = claims.exp * 1000 - state.now();
    const expiry = setTimeout(() => revokeConn(state, conn, "expired"), Math.max(0, expiresIn));
    expiry.unref();

    ws.on("message", (data, isBinary) => {
      conn.lastFrameAt = state.now();
      if (isBinary) onBinary(state, conn, data);
      else onText(state, conn, data);
    });
    ws.on("ping", () => {
      conn.lastFrameAt = state.now();
    });
    ws.on("pong", () => {
      conn.lastFrameAt = state.now();
    });
    ws.on("error", (err: Error & { code?: string }) => {
      if (err.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") {
        state.metrics.frameErrors++;
        state.log(`peer frame_too_large device=${conn.device.id}`);
      }
    });
    ws.on("close", (code) => {
      clearTimeout(expiry);
      const d = conn.device;
      state.log(`peer closed device=${d.id} code=${code} sockets=${d.conns.size - 1}`);
      d.conns.delete(conn);
      onConnGone(state, conn);
      if (d.conns.size === 0 && state.devices.get(d.id) === d) {
        state.devices.delete(d.id);
        removePresence(state, d.id).catch((err) =>
          state.log(`presence remove_failed device=${d.id} error=${(err as Error).message}`),
        );
      } else touchPresence(state, d);
    });

    state.log(`peer connected device=${device.id} ip=${ip} sockets=${device.conns.size}`);
    ws.send(control("connected", { deviceId: device.id, ip, relayId: state.config.RELAY_ID }));
  };

  return {
    onUpgrade(req, socket, head) {
      socket.on("error", () => {});
      const nowSec = Math.floor(state.now() / 1000);
      authenticatePeer(req, {
        secret: state.config.JWT_SECRET,
        previousSecret: state.config.JWT_SECRET_PREVIOUS,
        redis: state.redis,
        nowSec,
      })
        .catch((err): PeerAuth => {
          // Redis down: we cannot check revocation, so we fail closed. 1013 (try again later) makes
          // clients back off and retry, where 4002 would send every peer to the API for a refresh.
          state.log(`peer auth_error error=${(err as Error).message}`);
          const offered = offeredProtocols(req);
          const protocol = offered.find((p) => p.startsWith("token.")) ?? offered[0];
          return { ok: false, code: CLOSE_TRY_LATER, reason: "auth_unavailable", protocol };
        })
        .then((auth) => {
          authByRequest.set(req, auth);
          wss.handleUpgrade(req, socket, head, (ws) => {
            if (state.draining) refuse(ws, CLOSE_GOING_AWAY, "draining");
            else if (!auth.ok) refuse(ws, auth.code, auth.reason);
            else accept(ws, req, auth);
          });
        });
    },
    async closeAll(timeoutMs) {
      const all: WebSocket[] = [];
      for (const d of state.devices.values()) for (const c of d.conns) all.push(c.ws);
      for (const ws of wss.clients) if (!all.includes(ws)) all.push(ws);
      await Promise.all(
        all.map(
          (ws) =>
            new Promise<void>((resolve) => {
              if (ws.readyState === WebSocket.CLOSED) return resolve();
              const timer = setTimeout(() => {
                ws.terminate();
                resolve();
              }, timeoutMs);
              ws.once("close", () => {
                clearTimeout(timer);
                resolve();
              });
              ws.close(CLOSE_GOING_AWAY, "relay shutting down");
            }),
        ),
      );
    },
    stop() {
      clearInterval(idleTimer);
      wss.close();
    },
  };
}

/**
 * The class and country of the socket's own address (RELAY_ASN_TABLE, the API's ASN rules) win over
 * what the token says the register/refresh caller was: routing reads them from presence, earnings
 * from the counters hash. A disagreement is logged and counted (ADR 0011).
 */
function applySeenClass(state: RelayState, device: Device, ip: string, claims: PeerClaims) {
  if (!state.asnTable) return;
  const seen = classifyIp(state.asnTable, ip);
  if (!seen) return; // not in the table (private, unrouted): the token's view stands
  const tokenClass = str(claims.ipType);
  if (tokenClass && tokenClass !== seen.ipType) {
    bump(state.metrics.classMismatches, "ip_type");
    state.log(
      `peer class_mismatch device=${device.id} field=ip_type token=${tokenClass} seen=${seen.ipType} asn=${seen.asn}`,
    );
  }
  device.ipType = seen.ipType;
  if (seen.country) {
    const tokenGeo = str(claims.geo);
    if (tokenGeo && tokenGeo.toUpperCase() !== seen.country) {
      bump(state.metrics.classMismatches, "country");
      state.log(
        `peer class_mismatch device=${device.id} field=country token=${tokenGeo} seen=${seen.country} asn=${seen.asn}`,
      );
    }
    device.country = seen.country;
    device.countryFromToken = true;
  }
  state.redis
    .hset(keys.deviceBytes(device.id), { class: seen.ipType })
    .catch((err) =>
      state.log(`counters class_write_failed device=${device.id} error=${(err as Error).message}`),
    );
}

/** Closes one open socket with 4002 (its token was revoked or expired) and counts it. */
function revokeConn(state: RelayState, conn: PeerConn, reason: "revoked" | "expired") {
  if (conn.ws.readyState !== WebSocket.OPEN) return;
  bump(state.metrics.socketsRevoked, reason);
  state.log(`peer revoked device=${conn.device.id} reason=${reason}`);
  conn.ws.close(CLOSE_BAD_TOKEN, reason);
  setTimeout(() => conn.ws.terminate(), 5_000).unref();
}

/**
 * The device's tokens below generation `gen` are revoked (re-registration, key revocation): its
 * sockets that authenticated with one of them close with 4002. Returns how many closed.
 */
export function revokeDeviceSockets(state: RelayState, deviceId: string, gen: number): number {
  const device = state.devices.get(deviceId);
  if (!device || !Number.isFinite(gen)) return 0;
  let closed = 0;
  for (const conn of device.conns) {
    if (conn.gen < gen && conn.ws.readyState === WebSocket.OPEN) {
      revokeConn(state, conn, "revoked");
      closed++;
    }
  }
  return closed;
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function onBinary(state: RelayState, conn: PeerConn, data: RawData) {
  const decoded = decodeFrame(toBuffer(data));
  if (!decoded.ok) {
    state.metrics.frameErrors++;
    return;
  }
  const { type, sessionId, payload } = decoded.frame;
  switch (type) {
    case FRAME_DATA:
      fromPeer(state, conn, sessionId, Buffer.from(payload.buffer, payload.byteOffset, payload.length));
      return;
    case FRAME_END:
      if (conn.flow) onPeerEnd(state, conn, sessionId);
      return;
    case FRAME_WINDOW: {
      const credit = windowCredit(decoded.frame);
      if (credit === undefined) state.metrics.frameErrors++;
      else if (conn.flow) onPeerWindow(state, conn, sessionId, credit);
      return;
    }
    case FRAME_CLOSE:
      // Relay -> peer only by the contract; a peer sending it clearly means "closed".
      onPeerClosed(state, conn, sessionId);
      return;
    default:
      // Unknown type bytes are ignored so newer peers can extend the protocol.
      return;
  }
}

function onText(state: RelayState, conn: PeerConn, data: RawData) {
  const msg = parseControl(toBuffer(data).toString("utf8"));
  if (!msg) {
    state.metrics.frameErrors++;
    return;
  }
  const p = msg.payload;
  const sessionId = str(p.sessionId);
  switch (msg.type) {
    case "heartbeat":
      conn.ws.send(control("heartbeat_ack", {}));
      return;
    case "device_info":
      onDeviceInfo(state, conn, p);
      return;
    case "tunnel_connected":
      if (sessionId) onPeerConnected(state, conn, sessionId);
      return;
    case "tunnel_open_failed":
      if (sessionId) onPeerOpenFailed(state, conn, sessionId, p.reason, p.detail ?? p.error);
      return;
    case "tunnel_closed":
      if (sessionId) onPeerClosed(state, conn, sessionId);
      return;
    case "tunnel_data": {
      const b64 = str(p.data);
      if (sessionId && b64 !== undefined) fromPeer(state, conn, sessionId, Buffer.from(b64, "base64"));
      return;
    }
    case "rotation_complete":
      state.log(`peer rotation_complete device=${conn.device.id} success=${String(p.success)}`);
      return;
    default:
      return;
  }
}

function onDeviceInfo(state: RelayState, conn: PeerConn, p: Record<string, unknown>) {
  const device: Device = conn.device;
  const protocol = str(p.protocol);
  const capabilities = Array.isArray(p.capabilities)
    ? p.capabilities.filter((c): c is string => typeof c === "string")
    : [];
  conn.infoReceived = true;
  conn.binary = protocol === "binary-v1";
  // Window (0x04) and half-close (0x02) are binary frames, so flow-v1 needs binary-v1 too.
  conn.flow = conn.binary && capabilities.includes("flow-v1");
  // Some clients send booleans as strings; liberal in what we accept.
  conn.supportsRedirect = p.supportsRelayRedirect === true || p.supportsRelayRedirect === "true";
  if (!device.countryFromToken) device.country = (str(p.country) ?? device.country).slice(0, 8);
  device.carrier = (str(p.carrier) ?? device.carrier).slice(0, 128);
  device.sdkVersion = (str(p.sdkVersion) ?? device.sdkVersion).slice(0, 64);
  device.protocol = conn.binary ? "binary-v1" : "json";
  device.capabilities = capabilities.slice(0, 16).map((c) => c.slice(0, 32));
  touchPresence(state, device);
  if (conn.supportsRedirect) {
    maybeRedirect(state, conn).catch((err) =>
      state.log(`redirect lookup_failed device=${device.id} error=${(err as Error).message}`),
    );
  }
}
