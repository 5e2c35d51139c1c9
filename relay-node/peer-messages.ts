// What a peer sends on an open socket: binary tunnel frames and JSON control messages
// (docs/protocol.md), dispatched to the tunnels; malformed ones are counted and ignored.
import {
  decodeFrame,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_END,
  FRAME_WINDOW,
  windowCredit,
} from "../shared/frame.ts";
import { control, type DeviceInfo, receiveFromPeer } from "../shared/messages.ts";
import { touchPresence } from "./presence.ts";
import { maybeRedirect } from "./redirect.ts";
import type { Device, PeerConn, RelayState } from "./state.ts";
import {
  fromPeer,
  fromPeerParts,
  onPeerClosed,
  onPeerConnected,
  onPeerEnd,
  onPeerOpenFailed,
  onPeerWindow,
} from "./tunnels.ts";

/** Every heartbeat gets the same answer: encoded once, not per heartbeat (a text frame still). */
const HEARTBEAT_ACK = Buffer.from(control("heartbeat_ack", {}));

export function onBinary(state: RelayState, conn: PeerConn, data: Buffer) {
  const decoded = decodeFrame(data);
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

/**
 * A binary message that arrived over several reads (wire.ts binaryParts). A data frame's payload
 * is written on part by part, uncopied, as if it had come as that many frames (in one system call);
 * anything else (or a header cut between parts) is joined and read as one message.
 */
export function onBinaryParts(state: RelayState, conn: PeerConn, parts: Buffer[]) {
  const first = parts[0]!;
  const headEnd = first.length >= 2 ? 2 + first[1]! : Number.POSITIVE_INFINITY;
  if (first[0] !== FRAME_DATA || headEnd > first.length) {
    onBinary(state, conn, Buffer.concat(parts));
    return;
  }
  const head = decodeFrame(first.subarray(0, headEnd));
  if (!head.ok) {
    state.metrics.frameErrors++;
    return;
  }
  parts[0] = first.subarray(headEnd);
  fromPeerParts(state, conn, head.frame.sessionId, parts);
}

export function onText(state: RelayState, conn: PeerConn, data: Buffer) {
  const received = receiveFromPeer(data.toString("utf8"));
  if (received.kind === "invalid") {
    // Not JSON, no type, or a known type with malformed fields: counted and ignored, never fatal.
    state.metrics.frameErrors++;
    return;
  }
  if (received.kind === "unknown") return; // newer peers may send more; ignored by the contract
  const msg = received.msg;
  switch (msg.type) {
    case "heartbeat":
      conn.ws.sendText(HEARTBEAT_ACK);
      return;
    case "device_info":
      onDeviceInfo(state, conn, msg.payload);
      return;
    case "tunnel_connected":
      onPeerConnected(state, conn, msg.payload.sessionId);
      return;
    case "tunnel_open_failed": {
      const p = msg.payload;
      onPeerOpenFailed(state, conn, p.sessionId, p.reason, p.detail ?? p.error);
      return;
    }
    case "tunnel_closed":
      onPeerClosed(state, conn, msg.payload.sessionId);
      return;
    case "tunnel_data":
      fromPeer(state, conn, msg.payload.sessionId, Buffer.from(msg.payload.data, "base64"));
      return;
    case "rotation_complete": {
      const success = msg.payload.success === true || msg.payload.success === "true";
      state.log.info({ deviceId: conn.device.id, success }, "peer rotation_complete");
      return;
    }
  }
}

function onDeviceInfo(state: RelayState, conn: PeerConn, p: DeviceInfo) {
  const device: Device = conn.device;
  const capabilities = p.capabilities ?? [];
  conn.infoReceived = true;
  conn.binary = p.protocol === "binary-v1";
  // Window (0x04) and half-close (0x02) are binary frames, so flow-v1 needs binary-v1 too.
  conn.flow = conn.binary && capabilities.includes("flow-v1");
  // Some clients send booleans as strings; liberal in what we accept.
  conn.supportsRedirect = p.supportsRelayRedirect === true || p.supportsRelayRedirect === "true";
  if (!device.countryFromToken) device.country = (p.country ?? device.country).slice(0, 8);
  device.carrier = (p.carrier ?? device.carrier).slice(0, 128);
  device.sdkVersion = (p.sdkVersion ?? device.sdkVersion).slice(0, 64);
  device.protocol = conn.binary ? "binary-v1" : "json";
  device.capabilities = capabilities.slice(0, 16).map((c) => c.slice(0, 32));
  touchPresence(state, device);
  if (conn.supportsRedirect) {
    maybeRedirect(state, conn).catch((err) =>
      state.log.warn({ deviceId: device.id, err: (err as Error).message }, "redirect lookup_failed"),
    );
  }
}
