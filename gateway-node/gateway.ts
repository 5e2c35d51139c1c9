/**
 * The gateway process: HTTP proxy (CONNECT + absolute-URI forwarding), SOCKS5, and an admin port
 * with /health and /metrics. startGateway is what main.ts, the local stack and tests call.
 */
import { lookup } from "node:dns/promises";
import { createServer as createHttpServer } from "node:http";
import { createServer as createNetServer, type Socket } from "node:net";
import { type SharedClock, startSharedClock } from "../shared/clock.ts";
import { listen } from "../shared/listen.node.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { serveMetrics } from "../shared/metrics.ts";
import type { RedisClient } from "../shared/redis.ts";
import type { GatewayConfig } from "./config.ts";
import { GatewayError, newRequestId, rawHttpError } from "./errors.ts";
import { HandshakeGuard } from "./handshakes.ts";
import { handleConnect } from "./http-connect.ts";
import { handleForward } from "./http-forward.ts";
import { LoginCache } from "./login.ts";
import { newMetrics, registerGatewayMetrics } from "./metrics.ts";
import { startModemByteCounters } from "./modem-bytes.ts";
import { handleSocks } from "./socks5.ts";
import type { Lookup } from "./targets.ts";
import type { GatewayContext } from "./tunnel.ts";

export interface GatewayDeps {
  redis: RedisClient;
  /**
   * This host's clock (ms; default Date.now). Shared deadlines (holds, byte leases, expiries, the
   * login-failure window) are stamped with Redis's clock, measured against this one.
   */
  now?: () => number;
  /** Test seam: the shared clock itself, used as given instead of following Redis's. */
  sharedClock?: SharedClock;
  /** name -> addresses for modem targets (default: the system resolver) */
  lookup?: Lookup;
  /** Structured log (default: JSON lines on stdout, warnings and errors only; main.ts logs info). */
  log?: Logger;
}

const systemLookup: Lookup = async (name) =>
  (await lookup(name, { all: true, verbatim: true })).map((a) => a.address);

export interface Gateway {
  httpPort: number;
  socksPort: number;
  adminPort: number;
  ctx: GatewayContext;
  /** Stops accepting, lets live tunnels finish for up to GATEWAY_DRAIN_MS, then closes the rest. */
  close(): Promise<void>;
}

export async function startGateway(config: GatewayConfig, deps: GatewayDeps): Promise<Gateway> {
  const log = deps.log ?? createLogger({ service: "gateway", level: "warn" });
  const clock =
    deps.sharedClock ??
    (await startSharedClock({ serverTime: () => deps.redis.time(), local: deps.now ?? Date.now, log }));
  const ctx: GatewayContext = {
    config,
    redis: deps.redis,
    now: clock.now,
    metrics: newMetrics(),
    log,
    tunnels: new Set(),
    draining: false,
    lookup: deps.lookup ?? systemLookup,
    modemBytes: startModemByteCounters({ redis: deps.redis, flushMs: config.GATEWAY_FLUSH_MS }),
    handshakes: new HandshakeGuard({
      deadlineMs: config.GATEWAY_HANDSHAKE_TIMEOUT_MS,
      perIp: config.GATEWAY_UNAUTH_PER_IP,
      total: config.GATEWAY_UNAUTH_TOTAL,
    }),
    logins: new LoginCache(),
  };
  registerGatewayMetrics(ctx.metrics, {
    tunnels: () => ctx.tunnels.size,
    draining: () => ctx.draining,
    clockOffsetMs: clock.offsetMs,
  });
  const tooMany = new GatewayError("E_RATE_LIMITED", "too many unauthenticated connections; retry shortly");

  // headersTimeout covers later requests on a kept-alive connection; the first is the guard's.
  const proxy = createHttpServer({
    requestTimeout: 0,
    headersTimeout: config.GATEWAY_HANDSHAKE_TIMEOUT_MS,
    connectionsCheckingInterval: Math.min(1000, config.GATEWAY_HANDSHAKE_TIMEOUT_MS),
    keepAliveTimeout: 30_000,
  });
  proxy.on("connection", (socket: Socket) => {
    if (!ctx.handshakes.admit(socket)) socket.end(rawHttpError(tooMany, newRequestId()));
  });
  proxy.on(
    "connect",
    (req, socket, head) => void handleConnect(ctx, req, socket as import("node:net").Socket, head),
  );
  proxy.on("request", (req, res) => void handleForward(ctx, req, res));
  proxy.on("clientError", (_err, socket) => {
    if (!socket.destroyed) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
  });

  // As node:http does for the proxy port: a reply the exit sends in parts (head, then body) must not
  // wait for the customer's delayed acknowledgement of the first part (Nagle's algorithm).
  const socks = createNetServer({ noDelay: true }, (socket) => {
    if (ctx.handshakes.admit(socket)) void handleSocks(ctx, socket);
    else socket.destroy();
  });

  const admin = createHttpServer((req, res) => {
    if (req.url === "/health") {
      const body = JSON.stringify({ ok: !ctx.draining, draining: ctx.draining, tunnels: ctx.tunnels.size });
      res.writeHead(ctx.draining ? 503 : 200, { "Content-Type": "application/json" }).end(body);
    } else if (req.url === "/metrics") {
      void serveMetrics(ctx.metrics.registry, res);
    } else {
      res.writeHead(404).end();
    }
  });

  const host = config.GATEWAY_HOST;
  const httpPort = (await listen(proxy, config.GATEWAY_HTTP_PORT, host)).port;
  const socksPort = (await listen(socks, config.GATEWAY_SOCKS_PORT, host)).port;
  const adminPort = (await listen(admin, config.GATEWAY_ADMIN_PORT, config.GATEWAY_ADMIN_HOST)).port;

  let closing: Promise<void> | undefined;
  return {
    httpPort,
    socksPort,
    adminPort,
    ctx,
    close() {
      closing ??= (async () => {
        ctx.draining = true;
        const stopped = Promise.all([new Promise((r) => proxy.close(r)), new Promise((r) => socks.close(r))]);
        proxy.closeIdleConnections();
        const deadline = Date.now() + config.GATEWAY_DRAIN_MS;
        while (ctx.tunnels.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        await Promise.all([...ctx.tunnels].map((t) => t.close()));
        proxy.closeAllConnections();
        await stopped;
        await ctx.modemBytes?.stop();
        clock.stop();
        await new Promise((r) => admin.close(r));
      })();
      return closing;
    },
  };
}
