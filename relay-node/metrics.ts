// The relay's Prometheus metrics (relay-node/README.md lists each). Hot paths bump plain numbers in
// `Metrics` (per chunk, never a label lookup); the registry reads them, and the gauges read live
// state, only when /metrics is scraped.
import {
  byLabel,
  createRegistry,
  Histogram,
  LATENCY_BUCKETS,
  type Registry,
  scrapedCounter,
  scrapedGauge,
} from "../shared/metrics.ts";
import type { RelayState } from "./state.ts";

export interface Metrics {
  registry: Registry;
  /** Tunnel request to the peer's tcp_open_ok (or its failure), by result. */
  tunnelSetupSeconds: Histogram<"result">;
  /** Duration of each earnings-counter flush to Redis. */
  counterFlushSeconds: Histogram;
  bytesUp: number;
  bytesDown: number;
  frameErrors: number;
  tunnelsOpened: number;
  tunnelFailures: Map<string, number>;
  socketsRefused: Map<string, number>;
  /** Largest number of bytes the relay held for any one session (flow-control evidence). */
  maxSessionBuffered: number;
  /** flow-v1 windows doubled for a fast tunnel (tunnels.ts grownWindow). */
  windowsGrown: number;
  /** Tunnels whose buyer account owns the device: carried, not earned (ADR 0010). */
  selfDealingTunnels: number;
  /** Sockets whose remote address classified differently from the token's class or country. */
  classMismatches: Map<string, number>;
  /** Sockets closed because their device's tokens were revoked or their own token expired. */
  socketsRevoked: Map<string, number>;
}

export function newMetrics(): Metrics {
  const registry = createRegistry();
  return {
    registry,
    tunnelSetupSeconds: new Histogram({
      name: "relay_tunnel_setup_seconds",
      help: "From the gateway's tunnel request to the peer's answer, by result (ok, failed).",
      labelNames: ["result"],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    counterFlushSeconds: new Histogram({
      name: "relay_counter_flush_seconds",
      help: "Duration of each flush of the devices' earnings counters to Redis.",
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    bytesUp: 0,
    bytesDown: 0,
    frameErrors: 0,
    tunnelsOpened: 0,
    tunnelFailures: new Map(),
    socketsRefused: new Map(),
    maxSessionBuffered: 0,
    windowsGrown: 0,
    selfDealingTunnels: 0,
    classMismatches: new Map(),
    socketsRevoked: new Map(),
  };
}

export function bump(map: Map<string, number>, key: string) {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/** A socket's framing: flow-v1 (credit windows, binary), binary-v1, or legacy JSON/base64. */
function protocolOf(conn: { binary: boolean; flow: boolean }): string {
  return conn.flow ? "flow-v1" : conn.binary ? "binary-v1" : "json";
}

/** Registers the counters and gauges read from the relay's state at scrape time. */
export function registerStateMetrics(state: RelayState): void {
  const m = state.metrics;
  const r = m.registry;
  scrapedGauge(
    r,
    "relay_sockets",
    "Open peer WebSockets, by framing protocol (flow-v1, binary-v1, json).",
    () => {
      const by = new Map<string, number>([
        ["flow-v1", 0],
        ["binary-v1", 0],
        ["json", 0],
      ]);
      for (const d of state.devices.values())
        for (const c of d.conns) by.set(protocolOf(c), (by.get(protocolOf(c)) ?? 0) + 1);
      return byLabel("protocol", by);
    },
    ["protocol"],
  );
  scrapedGauge(
    r,
    "relay_clock_offset_seconds",
    "Redis's clock minus this host's, as last measured: token expiry, presence and liveness use Redis's (shared/clock.ts).",
    () => [[{}, state.sharedClock.offsetMs() / 1000]],
  );
  scrapedGauge(r, "relay_devices", "Devices with at least one open socket.", () => [
    [{}, state.devices.size],
  ]);
  scrapedGauge(r, "relay_tunnels", "Open or opening tunnel sessions.", () => [[{}, state.sessions.size]]);
  scrapedGauge(
    r,
    "relay_counter_flush_lag_seconds",
    "Age of the oldest counted byte not yet written to Redis (earnings staleness).",
    () => [[{}, state.counters.lagMs() / 1000]],
  );
  scrapedGauge(
    r,
    "relay_session_buffered_bytes_max",
    "Most bytes ever held in memory for one session.",
    () => [[{}, m.maxSessionBuffered]],
  );
  scrapedGauge(
    r,
    "relay_grown_window_bytes",
    "flow-v1 credit granted beyond the initial 256 KiB windows, over all open tunnels (TUNNEL_WINDOW_BUDGET_BYTES caps it).",
    () => [[{}, state.grownWindowBytes]],
  );
  scrapedCounter(
    r,
    "relay_windows_grown_total",
    "flow-v1 windows doubled because a tunnel moved a whole window fast to a customer who kept up.",
    () => [[{}, m.windowsGrown]],
  );
  scrapedCounter(r, "relay_tunnels_opened_total", "Tunnels that reached the open state.", () => [
    [{}, m.tunnelsOpened],
  ]);
  scrapedCounter(
    r,
    "relay_tunnel_failures_total",
    "Tunnel opens that failed, by reason (the error code the gateway receives).",
    () => byLabel("reason", m.tunnelFailures),
    ["reason"],
  );
  scrapedCounter(
    r,
    "relay_bytes_total",
    "Tunnel bytes; up = peer to customer, down = customer to peer.",
    () => [
      [{ direction: "up" }, m.bytesUp],
      [{ direction: "down" }, m.bytesDown],
    ],
    ["direction"],
  );
  scrapedCounter(
    r,
    "relay_frame_errors_total",
    "Malformed or oversized frames and protocol violations.",
    () => [[{}, m.frameErrors]],
  );
  scrapedCounter(
    r,
    "relay_sockets_refused_total",
    "Peer sockets closed at connect, by reason.",
    () => byLabel("reason", m.socketsRefused),
    ["reason"],
  );
  scrapedCounter(
    r,
    "relay_self_dealing_tunnels_total",
    "Tunnels for a credential of the device's own account: carried, earning nothing.",
    () => [[{}, m.selfDealingTunnels]],
  );
  scrapedCounter(
    r,
    "relay_class_mismatch_total",
    "Peer sockets whose address classified otherwise than their token said, by field (ip_type, country).",
    () => byLabel("field", m.classMismatches),
    ["field"],
  );
  scrapedCounter(
    r,
    "relay_sockets_revoked_total",
    "Open peer sockets closed with 4002, by reason (revoked, expired).",
    () => byLabel("reason", m.socketsRevoked),
    ["reason"],
  );
}
