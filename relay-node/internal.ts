import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { timingSafeEqual } from "../shared/ids.ts";
import { serveMetrics } from "../shared/metrics.ts";
import type { RelayState } from "./state.ts";
import { openTunnel, respondError } from "./tunnels.ts";

export const TUNNEL_UPGRADE = "peerproxy-tunnel/1";

/** Parses `host:port` with IPv6 in brackets; undefined when malformed. */
export function parseTarget(raw: string | undefined): { host: string; port: number } | undefined {
  if (!raw) return undefined;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s/]+)):(\d{1,5})$/.exec(raw.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

function authorized(state: RelayState, req: IncomingMessage): boolean {
  const header = req.headers.authorization ?? "";
  // The previous secret is accepted while RELAY_SHARED_SECRET rotates (docs/deploy.md).
  const previous = state.config.RELAY_SHARED_SECRET_PREVIOUS;
  return (
    timingSafeEqual(header, `Bearer ${state.config.RELAY_SHARED_SECRET}`) ||
    (previous !== undefined && timingSafeEqual(header, `Bearer ${previous}`))
  );
}

/** GET /health and GET /metrics; POST /tunnel only as an upgrade. */
export function handleInternalRequest(state: RelayState, req: IncomingMessage, res: ServerResponse) {
  const path = (req.url ?? "/").split("?")[0];
  if (req.method === "GET" && path === "/health") {
    let sockets = 0;
    for (const d of state.devices.values()) sockets += d.conns.size;
    res.writeHead(state.draining ? 503 : 200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        status: state.draining ? "draining" : "ok",
        relayId: state.config.RELAY_ID,
        region: state.config.RELAY_REGION,
        devices: state.devices.size,
        sockets,
        tunnels: state.sessions.size,
      }),
    );
    return;
  }
  if (req.method === "GET" && path === "/metrics") {
    void serveMetrics(state.metrics.registry, res);
    return;
  }
  const status = path === "/tunnel" ? 426 : 404;
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify({ code: status === 426 ? "upgrade_required" : "not_found" }));
}

/** POST /tunnel with `Upgrade: peerproxy-tunnel/1` (docs/internal.md). */
export function handleInternalUpgrade(state: RelayState, req: IncomingMessage, socket: Duplex, head: Buffer) {
  const gw = socket as Socket;
  gw.on("error", () => {});
  const path = (req.url ?? "/").split("?")[0];
  if (req.method !== "POST" || path !== "/tunnel") return respondError(gw, 404, { code: "not_found" });
  if (!authorized(state, req)) return respondError(gw, 401, { code: "bad_secret" });
  if ((req.headers.upgrade ?? "").toLowerCase() !== TUNNEL_UPGRADE) {
    return respondError(gw, 400, { code: "bad_request", detail: `Upgrade must be ${TUNNEL_UPGRADE}` });
  }
  // The stream after the headers is the tunnel, so a request body would be mistaken for tunnel bytes.
  const length = req.headers["content-length"];
  if (req.headers["transfer-encoding"] || (length !== undefined && length !== "0")) {
    return respondError(gw, 400, { code: "bad_request", detail: "POST /tunnel takes no body" });
  }
  if (state.draining) return respondError(gw, 503, { code: "draining" });
  const deviceId = req.headers["x-device-id"];
  const target = parseTarget(req.headers["x-target"] as string | undefined);
  if (typeof deviceId !== "string" || !target) {
    return respondError(gw, 400, {
      code: "bad_request",
      detail: "X-Device-Id and X-Target (host:port) required",
    });
  }
  const device = state.devices.get(deviceId);
  if (!device) return respondError(gw, 404, { code: "device_not_here" });
  const requestId = req.headers["x-request-id"];
  // Self-dealing (ADR 0010): an account's own credential through its own device is carried, but
  // earns nothing, or a supplier could buy from itself and be paid more than it spent.
  const buyer = req.headers["x-buyer-account"];
  const selfDealing = typeof buyer === "string" && buyer !== "" && buyer === device.accountId;
  if (selfDealing) {
    state.metrics.selfDealingTunnels++;
    state.log.info({ deviceId: device.id, accountId: device.accountId }, "tunnel self_dealing");
  }
  openTunnel(state, device, target, gw, head, {
    requestId: typeof requestId === "string" ? requestId.slice(0, 64).replace(/[^\w.-]/g, "_") : "",
    // Probe bytes are ours, not a customer's: they are not sold, so the device earns nothing on them.
    billable: req.headers["x-traffic"] !== "probe" && !selfDealing,
  });
}
