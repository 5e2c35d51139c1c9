import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { type RawData, WebSocket, WebSocketServer } from "ws";
import {
  decodeFrame,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_END,
  FRAME_WINDOW,
  MAX_FRAME_BYTES,
  windowCredit,
} from "../shared/frame.ts";
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
      authenticatePeer(req, { secret: state.config.JWT_SECRET, redis: state.redis, nowSec })
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
