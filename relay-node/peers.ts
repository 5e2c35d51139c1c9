// The peers' WebSocket port: upgrade and authentication, one device's sockets, idle and expiry
// sweeps, close. What a socket may be is peer-access.ts; what it says is peer-messages.ts.
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { MAX_FRAME_BYTES } from "../shared/frame.ts";
import { CLOSE_BAD_TOKEN, control } from "../shared/messages.ts";
import { authenticatePeer, offeredProtocols, type PeerAuth } from "./auth.ts";
import { bump } from "./metrics.ts";
import { applySeenClass, revokeConn, str } from "./peer-access.ts";
import { onBinary, onBinaryParts, onText } from "./peer-messages.ts";
import { removePresence, touchPresence } from "./presence.ts";
import type { PeerConn, PeerWire, RelayState } from "./state.ts";
import { onConnGone } from "./tunnels.ts";
import { acceptWebSocket, CLOSED, OPEN, type WireHandler } from "./wire.ts";

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

/**
 * The raw socket's error listener during the upgrade. Module-level on purpose: an arrow inside
 * onUpgrade would keep that call's closure context (the request with all its headers, the JWT
 * among them, and the `head` buffer) alive as long as the socket, ~3 KB per idle peer (measured).
 */
function ignoreSocketError() {}

/**
 * Where every peer socket's events go (wire.ts): one object per relay, so an idle socket carries
 * its connection as one field and no listener of its own.
 */
function peerHandler(state: RelayState, sockets: Set<PeerWire>): WireHandler<PeerConn> {
  return {
    message(ws, data, isBinary) {
      if (ws.data) onPeerMessage(state, ws.data, data, isBinary);
    },
    binaryParts(ws, parts) {
      if (!ws.data) return;
      ws.data.lastFrameAt = state.now();
      onBinaryParts(state, ws.data, parts);
    },
    alive(ws) {
      if (ws.data) ws.data.lastFrameAt = state.now();
    },
    error(ws, err) {
      if (ws.data && err.status === CLOSE_TOO_BIG) {
        state.metrics.frameErrors++;
        state.log.warn({ deviceId: ws.data.device.id }, "peer frame_too_large");
      }
    },
    close(ws, code) {
      sockets.delete(ws);
      if (ws.data) onPeerClose(state, ws.data, code);
    },
  };
}

function onPeerMessage(state: RelayState, conn: PeerConn, data: Buffer, isBinary: boolean) {
  conn.lastFrameAt = state.now();
  if (isBinary) onBinary(state, conn, data);
  else onText(state, conn, data);
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
  // Every open socket, accepted or on its way out after a refusal (closeAll ends them all).
  const sockets = new Set<PeerWire>();
  const handler = peerHandler(state, sockets);

  const idleTimer = setInterval(
    () => {
      const now = state.now();
      // tokens carry the API's time: compared by Redis's clock, not this host's (ADR 0031)
      const tokenNow = state.sharedClock.now();
      const idleMs = state.config.IDLE_TIMEOUT_MS;
      for (const device of state.devices.values()) {
        for (const conn of device.conns) {
          // Token expiry rides this sweep (a shared wheel, no timer per socket): a token that
          // expires on an open socket ends it with 4002, so the peer refreshes its identity
          // (PROTOCOL.md section 2) instead of serving on a credential that is no longer valid.
          if (tokenNow >= conn.expiresAt) {
            revokeConn(state, conn, "expired");
            continue;
          }
          // The number first: this runs for every socket every second, and all but a few are fine.
          if (now - conn.lastFrameAt > idleMs && conn.ws.readyState === OPEN) {
            // A dead peer never answers the close handshake: wire.ts cuts it after CLOSE_TIMEOUT_MS.
            conn.ws.close(1000, "idle timeout");
          }
        }
      }
    },
    Math.min(1_000, Math.max(50, state.config.IDLE_TIMEOUT_MS / 4)),
  );
  idleTimer.unref();

  const refuse = (ws: PeerWire, code: number, reason: string) => {
    bump(state.metrics.socketsRefused, reason);
    // Never the URL or the token: either may carry a credential.
    state.log.info({ code, reason }, "peer refused");
    ws.close(code, reason);
  };

  const accept = (ws: PeerWire, req: IncomingMessage, auth: Extract<PeerAuth, { ok: true }>) => {
    const claims = auth.claims;
    let device = state.devices.get(claims.sub);
    if (device) {
      // A newer generation means the device registered again: its older tokens are revoked, so
      // the sockets that still hold them go (and stop counting against the socket limit).
      for (const c of device.conns) {
        if (c.gen < claims.gen && c.ws.readyState === OPEN) refuse(c.ws, CLOSE_BAD_TOKEN, "revoked");
      }
      let open = 0;
      for (const c of device.conns) if (c.ws.readyState === OPEN) open++;
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
        presenceStale: false,
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
    // From here on the socket's events reach this connection (peerHandler).
    ws.data = conn;

    state.log.info({ deviceId: device.id, ip, sockets: device.conns.size }, "peer connected");
    ws.send(control("connected", { deviceId: device.id, ip, relayId: state.config.RELAY_ID }));
  };

  return {
    onUpgrade(req, socket, head) {
      socket.on("error", ignoreSocketError);
      const nowSec = Math.floor(state.sharedClock.now() / 1000);
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
          // A message over MAX_FRAME_BYTES closes the socket with 1009 (wire.ts); peerHandler counts it.
          const ws = acceptWebSocket(req, socket, head, {
            protocol: auth.protocol,
            handler,
            maxPayload: MAX_FRAME_BYTES,
          });
          if (!ws) return;
          sockets.add(ws);
          if (state.draining) refuse(ws, CLOSE_GOING_AWAY, "draining");
          else if (!auth.ok) refuse(ws, auth.code, auth.reason);
          else accept(ws, req, auth);
        });
    },
    async closeAll(timeoutMs) {
      await Promise.all(
        [...sockets].map(
          (ws) =>
            new Promise<void>((resolve) => {
              if (ws.readyState === CLOSED) return resolve();
              const timer = setTimeout(() => {
                ws.terminate();
                resolve();
              }, timeoutMs);
              ws.onceClosed(() => {
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
    },
  };
}
