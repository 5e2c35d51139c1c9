// The prober's Prometheus metrics on its admin port (prober/README.md lists each). Probe counts are
// plain numbers and maps bumped once per probe; the registry reads them when /metrics is scraped.
import { createRegistry, Histogram, type Registry, scrapedCounter, scrapedGauge } from "../shared/metrics.ts";

export interface ProberMetrics {
  registry: Registry;
  /** Whole probe (connect, TLS, transfer), by result: ok or the failure code. */
  probeSeconds: Histogram<"result">;
  /** Finished probes by result (ok or the failure code: no_exit_ip, tls_timeout, ...) and trigger. */
  results: Map<string, number>;
  /** The fleet watchdog's checks by result (ok or its check code) and pool (peer, mbl, self). */
  watchdogChecks: Map<string, number>;
}

/** Probes take up to PROBE_OVERALL_TIMEOUT_MS (tens of seconds): wider buckets than a request's. */
const PROBE_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60];

export function newProberMetrics(): ProberMetrics {
  const registry = createRegistry();
  return {
    registry,
    probeSeconds: new Histogram({
      name: "prober_probe_seconds",
      help: "Duration of each probe, by result (ok or its failure code).",
      labelNames: ["result"],
      buckets: PROBE_BUCKETS,
      registers: [registry],
    }),
    results: new Map(),
    watchdogChecks: new Map(),
  };
}

/** Counts one watchdog check. */
export function countWatchdogCheck(m: ProberMetrics, pool: string, result: string): void {
  const key = `${result}\t${pool}`;
  m.watchdogChecks.set(key, (m.watchdogChecks.get(key) ?? 0) + 1);
}

/** Counts one finished probe. */
export function countProbe(m: ProberMetrics, result: string, trigger: string, seconds: number): void {
  const key = `${result}\t${trigger}`;
  m.results.set(key, (m.results.get(key) ?? 0) + 1);
  m.probeSeconds.observe({ result }, seconds);
}

/** Registers the counters read from the prober's stats at scrape time. */
export function registerProberMetrics(
  m: ProberMetrics,
  stats: () => { running: number; probes: number; breakerProbes: number; historyErrors: number },
): void {
  const r = m.registry;
  scrapedCounter(r, "prober_probes_total", "Probes started (scheduled and breaker).", () => [
    [{}, stats().probes],
  ]);
  scrapedCounter(
    r,
    "prober_breaker_probes_total",
    "Re-probes fired by the gateways' failure reports.",
    () => [[{}, stats().breakerProbes]],
  );
  scrapedCounter(r, "prober_history_errors_total", "Probe results not written to Postgres.", () => [
    [{}, stats().historyErrors],
  ]);
  scrapedGauge(r, "prober_probes_running", "Probes in flight.", () => [[{}, stats().running]]);
  scrapedCounter(
    r,
    "prober_probe_results_total",
    "Finished probes by result (ok or the failure code) and trigger (scheduled, breaker).",
    () =>
      [...m.results].map(([key, v]) => {
        const [result = "", trigger = ""] = key.split("\t");
        return [{ result, trigger }, v] as [Record<string, string>, number];
      }),
    ["result", "trigger"],
  );
  scrapedCounter(
    r,
    "prober_watchdog_checks_total",
    "The fleet watchdog's checks by result (ok or the check code) and pool (peer, mbl, self).",
    () =>
      [...m.watchdogChecks].map(([key, v]) => {
        const [result = "", pool = ""] = key.split("\t");
        return [{ result, pool }, v] as [Record<string, string>, number];
      }),
    ["result", "pool"],
  );
}
