// The gateway's Prometheus metrics on the admin port (gateway-node/README.md lists each). Tunnels
// bump plain numbers (per chunk, on an object looked up once per tunnel); the registry copies them
// when /metrics is scraped.
import {
  byLabel,
  createRegistry,
  Histogram,
  LATENCY_BUCKETS,
  type Registry,
  scrapedCounter,
  scrapedGauge,
} from "../shared/metrics.ts";

/** Bytes of one pool; up = exit to customer, down = customer to exit (the relay's convention). */
export interface PoolBytes {
  up: number;
  down: number;
}

export interface Metrics {
  registry: Registry;
  /** From the authenticated request to the exit's answer, by pool and result (ok or the error code). */
  tunnelSetupSeconds: Histogram<"pool" | "result">;
  /** One call of the select_endpoint script (the atomic pick and hold), by pool. */
  selectEndpointSeconds: Histogram<"pool">;
  tunnelsOpened: number;
  tunnelsClosed: number;
  authFailures: number;
  exitFailures: number;
  /** a returning key's CONNECT picked beside its login (login.ts): how the login's answer came out */
  loginGuesses: { confirmed: number; repicked: number; refused: number };
  errors: Map<string, number>;
  bytes: Map<string, PoolBytes>;
}

export function newMetrics(): Metrics {
  const registry = createRegistry();
  return {
    registry,
    tunnelSetupSeconds: new Histogram({
      name: "gateway_tunnel_setup_seconds",
      help: "From the authenticated request to a live tunnel (or its failure), by pool and result.",
      labelNames: ["pool", "result"],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    selectEndpointSeconds: new Histogram({
      name: "gateway_select_endpoint_seconds",
      help: "Latency of the select_endpoint script (pick an exit and take its hold), by pool.",
      labelNames: ["pool"],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    tunnelsOpened: 0,
    tunnelsClosed: 0,
    authFailures: 0,
    exitFailures: 0,
    loginGuesses: { confirmed: 0, repicked: 0, refused: 0 },
    errors: new Map(),
    bytes: new Map(),
  };
}

/** The byte counters of one pool, created on first use; tunnels keep the object. */
export function poolBytes(m: Metrics, pool: string): PoolBytes {
  let b = m.bytes.get(pool);
  if (!b) {
    b = { up: 0, down: 0 };
    m.bytes.set(pool, b);
  }
  return b;
}

/** Registers what is read at scrape time: live tunnels, draining, and the plain counters. */
export function registerGatewayMetrics(
  m: Metrics,
  live: { tunnels: () => number; draining: () => boolean; clockOffsetMs: () => number },
) {
  const r = m.registry;
  scrapedGauge(r, "gateway_tunnels_active", "Open customer tunnels.", () => [[{}, live.tunnels()]]);
  scrapedGauge(r, "gateway_draining", "1 while the gateway drains (SIGTERM).", () => [
    [{}, live.draining() ? 1 : 0],
  ]);
  scrapedGauge(
    r,
    "gateway_clock_offset_seconds",
    "Redis's clock minus this host's, as last measured: shared deadlines use Redis's (shared/clock.ts).",
    () => [[{}, live.clockOffsetMs() / 1000]],
  );
  scrapedCounter(r, "gateway_tunnels_opened_total", "Tunnels that reached an exit.", () => [
    [{}, m.tunnelsOpened],
  ]);
  scrapedCounter(r, "gateway_tunnels_closed_total", "Tunnels closed, for any reason.", () => [
    [{}, m.tunnelsClosed],
  ]);
  scrapedCounter(
    r,
    "gateway_bytes_total",
    "Tunnel bytes by direction (up = exit to customer, down = customer to exit) and pool.",
    function* () {
      for (const [pool, b] of m.bytes) {
        yield [{ direction: "up", pool }, b.up];
        yield [{ direction: "down", pool }, b.down];
      }
    },
    ["direction", "pool"],
  );
  scrapedCounter(r, "gateway_exit_failures_total", "Exits that failed to open or died mid-stream.", () => [
    [{}, m.exitFailures],
  ]);
  scrapedCounter(
    r,
    "gateway_auth_failures_total",
    "Logins refused for a wrong key or username (E_AUTH_INVALID); a rising rate is a guessing client.",
    () => [[{}, m.authFailures]],
  );
  scrapedCounter(
    r,
    "gateway_login_guesses_total",
    "Returning keys' CONNECTs whose lease and pick went out beside the login, by what the login said: confirmed, repicked (pool or limits changed), refused (hold and lease given back).",
    () => Object.entries(m.loginGuesses).map(([outcome, n]) => [{ outcome }, n]),
    ["outcome"],
  );
  scrapedCounter(
    r,
    "gateway_errors_total",
    "Requests answered with an error, by code (the README's error table).",
    () => byLabel("code", m.errors),
    ["code"],
  );
}
