/** Process counters rendered as Prometheus text on the admin port. */
export interface Metrics {
  tunnelsOpened: number;
  tunnelsClosed: number;
  bytes: number;
  authFailures: number;
  exitFailures: number;
  errors: Map<string, number>;
}

export function newMetrics(): Metrics {
  return {
    tunnelsOpened: 0,
    tunnelsClosed: 0,
    bytes: 0,
    authFailures: 0,
    exitFailures: 0,
    errors: new Map(),
  };
}

export function renderMetrics(m: Metrics, live: number, draining: boolean): string {
  const lines = [
    "# TYPE gateway_tunnels_active gauge",
    `gateway_tunnels_active ${live}`,
    "# TYPE gateway_tunnels_opened_total counter",
    `gateway_tunnels_opened_total ${m.tunnelsOpened}`,
    "# TYPE gateway_tunnels_closed_total counter",
    `gateway_tunnels_closed_total ${m.tunnelsClosed}`,
    "# TYPE gateway_bytes_total counter",
    `gateway_bytes_total ${m.bytes}`,
    "# TYPE gateway_exit_failures_total counter",
    `gateway_exit_failures_total ${m.exitFailures}`,
    "# TYPE gateway_draining gauge",
    `gateway_draining ${draining ? 1 : 0}`,
    "# TYPE gateway_errors_total counter",
  ];
  for (const [code, n] of m.errors) lines.push(`gateway_errors_total{code="${code}"} ${n}`);
  return `${lines.join("\n")}\n`;
}
