// The prober's admin port: `GET /health` for orchestrators (Fly checks, systemd watchdogs, load
// balancers) and `GET /metrics` in Prometheus text. Keep it on a private interface.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serveMetrics } from "../shared/metrics.ts";
import type { RunningProber } from "./scheduler.ts";

export interface ProberAdmin {
  port: number;
  close(): Promise<void>;
}

/** Serves health and metrics for a running prober; healthy while Redis answers a PING. */
export async function startProberAdmin(
  opts: { host: string; port: number },
  deps: { prober: Pick<RunningProber, "metrics">; ping(): Promise<unknown> },
): Promise<ProberAdmin> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/health") {
      // A ping that hangs must not hang the check: the orchestrator's own timeout is the backstop.
      const timeout = new Promise((_, reject) =>
        setTimeout(() => reject(new Error("timeout")), 2_000).unref(),
      );
      Promise.race([deps.ping(), timeout]).then(
        () => reply(res, 200, { status: "ok", checks: { redis: { ok: true } } }),
        // Never echo the client's error text: it can carry hostnames and credentials.
        () => reply(res, 503, { status: "degraded", checks: { redis: { ok: false } } }),
      );
      return;
    }
    if (req.method === "GET" && path === "/metrics") {
      void serveMetrics(deps.prober.metrics.registry, res);
      return;
    }
    reply(res, 404, { error: "not found: GET /health or /metrics" });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function reply(res: import("node:http").ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
}
