// The peers' WebSocket port: upgrade and authentication, one device's sockets, idle and expiry
// sweeps, close. What a socket may be is peer-access.ts; what it says is peer-messages.ts.
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { type RawData, WebSocket, WebSocketServer } from "ws";
import { MAX_FRAME_BYTES } from "../shared/frame.ts";
import { CLOSE_BAD_TOKEN, control } from "../shared/messages.ts";
import { authenticatePeer, offeredProtocols, type PeerAuth } from "./auth.ts";
import { bump } from "./metrics.ts";
import { applySeenClass, revokeConn, str } from "./peer-access.ts";
import { onBinary, onText } from "./peer-messages.ts";
import { removePresence, touchPresence } from "./presence.ts";
import type { PeerConn, RelayState } from "./state.ts";
import { onConnGone } from "./tunnels.ts";

export { revokeDeviceSockets } from "./peer-access.ts";

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

/**
 * The raw socket's error listener during the upgrade. Module-level on purpose: an arrow inside
 * onUpgrade would keep that call's closure context (the request with all its headers, the JWT
 * among them, and the `head` buffer) alive as long as the socket, ~3 KB per idle peer (measured).
 */
function ignoreSocketError() {}

/**
 * The subprotocol ws negotiated is the peer's JWT ("token.<jwt>", ~300 bytes): ws keeps it as
 * `ws.protocol` for the socket's life, though it was only needed for the 101 response (already
 * written when handleUpgrade calls back) and nothing here reads it again. Dropping it frees the
 * string per idle socket and keeps credentials out of the heap.
 */
function forgetProtocol(ws: WebSocket) {
  (ws as unknown as { _protocol: string })._protocol = "";
}

/**
 * The peers' WebSocket class (ws's `WebSocket` option). Idle sockets are what a relay holds by the
 * ten thousand, so each carries its connection and relay as two fields, and its events go straight
 * to the shared handlers below from `emit`: no closures and no listener table per socket (five
 * listeners cost an EventEmitter ~100 bytes). Listeners others add (closeAll's "close") still run,
 * after ours, as they did when ours were the first listeners.
 */
class PeerSocket extends WebSocket {
  conn: PeerConn | undefined = undefined;
  relay: RelayState | undefined = undefined;

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    const { conn, relay } = this;
    if (conn && relay) {
      switch (event) {
        case "message":
          onPeerMessage(relay, conn, args[0] as RawData, args[1] as boolean);
          break;
        case "ping":
        case "pong":
          conn.lastFrameAt = relay.now();
          break;
        case "error":
          onPeerError(relay, conn, args[0] as Error & { code?: string });
          // Handled: an "error" nobody else listens to must not throw (EventEmitter's rule).
          if (this.listenerCount("error") === 0) return true;
          break;
        case "close":
          onPeerClose(relay, conn, args[0] as number);
          break;
      }
    }
    return super.emit(event, ...args);
  }
}

function onPeerMessage(state: RelayState, conn: PeerConn, data: RawData, isBinary: boolean) {
  conn.lastFrameAt = state.now();
  if (isBinary) onBinary(state, conn, data);
  else onText(state, conn, data);
}

function onPeerError(state: RelayState, conn: PeerConn, err: Error & { code?: string }) {
  if (err.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") {
    state.metrics.frameErrors++;
    state.log.warn({ deviceId: conn.device.id }, "peer frame_too_large");
  }
}

function onPeerClose(state: RelayState, conn: PeerConn, code: number) {
  const d = conn.device;
  state.log.info({ deviceId: d.id, code, sockets: d.conns.size - 1 }, "peer closed");
  d.conns.delete(conn);
  onConnGone(state, conn);
  if (d.conns.size === 0 && state.devices.get(d.id) === d) {
    state.devices.delete(d.id);
    removePresence(state, d.id).catch((err) =>
      state.log.warn({ deviceId: d.id, err: (err as Error).message }, "presence remove_failed"),
    );
  } else touchPresence(state, d);
}

export function createPeerServer(state: RelayState): PeerServer {
  const wss = new WebSocketServer({
    noServer: true,
    // ws closes with 1009 by itself when a message exceeds this; we count it as a frame error.
    maxPayload: MAX_FRAME_BYTES,
    perMessageDeflate: false,
    WebSocket: PeerSocket,
    handleProtocols: (_offered, req) => authByRequest.get(req)?.protocol ?? false,
  });

  const idleTimer = setInterval(
    () => {
      const now = state.now();
      const idleMs = state.config.IDLE_TIMEOUT_MS;
      for (const device of state.devices.values()) {
        for (const conn of device.conns) {
          // Token expiry rides this sweep (a shared wheel, no timer per socket): a token that
          // expires on an open socket ends it with 4002, so the peer refreshes its identity
          // (PROTOCOL.md section 2) instead of serving on a credential that is no longer valid.
          if (now >= conn.expiresAt) {
            revokeConn(state, conn, "expired");
            continue;
          }
          // The number first: this runs for every socket every second, and all but a few are fine.
          if (now - conn.lastFrameAt > idleMs && conn.ws.readyState === WebSocket.OPEN) {
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
    state.log.info({ code, reason }, "peer refused");
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
        presenceWrite: undefined,
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
      expiresAt: claims.exp * 1000,
    };
    device.conns.add(conn);
    touchPresence(state, device);
    // From here on the socket's events reach this connection (PeerSocket.emit).
    const peer = ws as PeerSocket;
    peer.conn = conn;
    peer.relay = state;

    state.log.info({ deviceId: device.id, ip, sockets: device.conns.size }, "peer connected");
    ws.send(control("connected", { deviceId: device.id, ip, relayId: state.config.RELAY_ID }));
  };

  return {
    onUpgrade(req, socket, head) {
      socket.on("error", ignoreSocketError);
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
          state.log.error({ err: (err as Error).message }, "peer auth_error");
          const offered = offeredProtocols(req);
          const protocol = offered.find((p) => p.startsWith("token.")) ?? offered[0];
          return { ok: false, code: CLOSE_TRY_LATER, reason: "auth_unavailable", protocol };
        })
        .then((auth) => {
          authByRequest.set(req, auth);
          wss.handleUpgrade(req, socket, head, (ws) => {
            forgetProtocol(ws);
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
