import type { RelayState } from "./state.ts";

/** Monotonic counters; gauges are read from live state when /metrics renders. */
export interface Metrics {
  bytesUp: number;
  bytesDown: number;
  frameErrors: number;
  tunnelsOpened: number;
  tunnelFailures: Map<string, number>;
  socketsRefused: Map<string, number>;
  /** Largest number of bytes the relay held for any one session (flow-control evidence). */
  maxSessionBuffered: number;
  /** Tunnels whose buyer account owns the device: carried, not earned (ADR 0010). */
  selfDealingTunnels: number;
  /** Sockets whose remote address classified differently from the token's class or country. */
  classMismatches: Map<string, number>;
  /** Sockets closed because their device's tokens were revoked or their own token expired. */
  socketsRevoked: Map<string, number>;
}

export function newMetrics(): Metrics {
  return {
    bytesUp: 0,
    bytesDown: 0,
    frameErrors: 0,
    tunnelsOpened: 0,
    tunnelFailures: new Map(),
    socketsRefused: new Map(),
    maxSessionBuffered: 0,
    selfDealingTunnels: 0,
    classMismatches: new Map(),
    socketsRevoked: new Map(),
  };
}

export function bump(map: Map<string, number>, key: string) {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/** Prometheus text exposition (version 0.0.4). */
export function renderMetrics(state: RelayState): string {
  const m = state.metrics;
  let sockets = 0;
  for (const d of state.devices.values()) sockets += d.conns.size;
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) lines.push(`${name}${labels} ${v}`);
  };
  metric("relay_sockets", "gauge", "Open peer WebSockets.", [["", sockets]]);
  metric("relay_devices", "gauge", "Devices with at least one open socket.", [["", state.devices.size]]);
  metric("relay_tunnels", "gauge", "Open or opening tunnel sessions.", [["", state.sessions.size]]);
  metric("relay_tunnels_opened_total", "counter", "Tunnels that reached the open state.", [
    ["", m.tunnelsOpened],
  ]);
  metric(
    "relay_tunnel_failures_total",
    "counter",
    "Tunnel opens that failed, by reason.",
    [...m.tunnelFailures].map(([k, v]) => [`{reason="${k}"}`, v]),
  );
  metric("relay_bytes_total", "counter", "Tunnel bytes; up = peer to customer, down = customer to peer.", [
    ['{direction="up"}', m.bytesUp],
    ['{direction="down"}', m.bytesDown],
  ]);
  metric("relay_frame_errors_total", "counter", "Malformed or oversized frames and protocol violations.", [
    ["", m.frameErrors],
  ]);
  metric(
    "relay_sockets_refused_total",
    "counter",
    "Peer sockets closed at connect, by reason.",
    [...m.socketsRefused].map(([k, v]) => [`{reason="${k}"}`, v]),
  );
  metric(
    "relay_self_dealing_tunnels_total",
    "counter",
    "Tunnels for a credential of the device's own account: carried, earning nothing.",
    [["", m.selfDealingTunnels]],
  );
  metric(
    "relay_class_mismatch_total",
    "counter",
    "Peer sockets whose address classified otherwise than their token said, by field (ip_type, country).",
    [...m.classMismatches].map(([k, v]) => [`{field="${k}"}`, v]),
  );
  metric(
    "relay_sockets_revoked_total",
    "counter",
    "Open peer sockets closed with 4002, by reason (revoked, expired).",
    [...m.socketsRevoked].map(([k, v]) => [`{reason="${k}"}`, v]),
  );
  metric("relay_session_buffered_bytes_max", "gauge", "Most bytes ever held in memory for one session.", [
    ["", m.maxSessionBuffered],
  ]);
  return `${lines.join("\n")}\n`;
}
