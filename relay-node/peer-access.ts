// What a peer socket may be: the class and country of its own address over its token's (ADR 0011),
// and closing the sockets whose token was revoked or expired (4002).
import { classifyIp } from "../shared/asn.ts";
import type { PeerClaims } from "../shared/jwt.ts";
import { keys } from "../shared/keys.ts";
import { CLOSE_BAD_TOKEN } from "../shared/messages.ts";
import { bump } from "./metrics.ts";
import type { Device, PeerConn, RelayState } from "./state.ts";
import { OPEN } from "./wire.ts";

export function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/**
 * The class and country of the socket's own address (RELAY_ASN_TABLE, the API's ASN rules) win over
 * what the token says the register/refresh caller was: routing reads them from presence, earnings
 * from the counters hash. A disagreement is logged and counted (ADR 0011).
 */
export function applySeenClass(state: RelayState, device: Device, ip: string, claims: PeerClaims) {
  if (!state.asnTable) return;
  const seen = classifyIp(state.asnTable, ip);
  if (!seen) return; // not in the table (private, unrouted): the token's view stands
  const tokenClass = str(claims.ipType);
  if (tokenClass && tokenClass !== seen.ipType) {
    bump(state.metrics.classMismatches, "ip_type");
    state.log.warn(
      { deviceId: device.id, field: "ip_type", tokenSays: tokenClass, seen: seen.ipType, asn: seen.asn },
      "peer class_mismatch",
    );
  }
  device.ipType = seen.ipType;
  if (seen.country) {
    const tokenGeo = str(claims.geo);
    if (tokenGeo && tokenGeo.toUpperCase() !== seen.country) {
      bump(state.metrics.classMismatches, "country");
      state.log.warn(
        { deviceId: device.id, field: "country", tokenSays: tokenGeo, seen: seen.country, asn: seen.asn },
        "peer class_mismatch",
      );
    }
    device.country = seen.country;
    device.countryFromToken = true;
  }
  state.redis
    .hset(keys.deviceBytes(device.id), { class: seen.ipType })
    .catch((err) =>
      state.log.warn({ deviceId: device.id, err: (err as Error).message }, "counters class_write_failed"),
    );
}

/** Closes one open socket with 4002 (its token was revoked or expired) and counts it. */
export function revokeConn(state: RelayState, conn: PeerConn, reason: "revoked" | "expired") {
  if (conn.ws.readyState !== OPEN) return;
  bump(state.metrics.socketsRevoked, reason);
  state.log.info({ deviceId: conn.device.id, reason }, "peer revoked");
  conn.ws.close(CLOSE_BAD_TOKEN, reason);
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
    if (conn.gen < gen && conn.ws.readyState === OPEN) {
      revokeConn(state, conn, "revoked");
      closed++;
    }
  }
  return closed;
}
