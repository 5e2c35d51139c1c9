/**
 * What the public status page shows, read from the same rollup, job records, watchdog checks and
 * alerts the JSON surfaces use. Counts and codes only: no address, no account, no internal URL.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { readStock } from "./stock.ts";

export type PoolName = "peer" | "mbl";

export interface StatusPoint {
  minute: Date;
  listed: number;
  online: number;
}

export interface NetworkStatus {
  generatedAt: Date;
  stock: Awaited<ReturnType<typeof readStock>>;
  /** The listing job's last run (the every-minute cron), or null before its first. */
  listing: { at: Date; status: string } | null;
  /** The fleet watchdog's latest verdict per pool (every country of that pool in its last run). */
  watchdog: Record<PoolName, { at: Date; passed: number; failed: number; failing: string[] } | null>;
  /** Alerts of the last 7 days, newest first: kind, public scope, opened/resolved, the error code. */
  alerts: { kind: string; scope: string; openedAt: Date; resolvedAt: Date | null; error: string | null }[];
  /** Exits the circuit breaker's re-probe took out of sale in the last 24 h, and its median probe time. */
  breaker: { delists24h: number; medianProbeMs: number | null };
  /** Routable and online endpoints per pool, one point a minute, over the last 24 h. */
  history: Record<PoolName, StatusPoint[]>;
}

export async function readNetworkStatus(db: Queryable, now: Date): Promise<NetworkStatus> {
  const since = new Date(now.getTime() - 24 * 3600_000).toISOString();
  const [stock, listing, checks, alerts, breaker, history] = await Promise.all([
    readStock(db),
    db.query<{ finished_at: string | null; started_at: string; status: string }>(
      "SELECT started_at, finished_at, status FROM job_runs WHERE job = 'auto-listing' ORDER BY started_at DESC LIMIT 1",
    ),
    // The latest run per pool: every row of that run (one per country).
    db.query<{ pool: PoolName; country: string; ok: boolean; run_at: string }>(
      `SELECT w.pool, w.country, w.ok, w.run_at FROM watchdog_checks w
       JOIN (SELECT pool, max(run_at) AS run_at FROM watchdog_checks
             WHERE pool IN ('peer', 'mbl') AND run_at > $1 GROUP BY pool) last
         ON last.pool = w.pool AND last.run_at = w.run_at
       ORDER BY w.pool, w.country`,
      [since],
    ),
    db.query<{
      kind: string;
      scope: string;
      opened_at: string;
      resolved_at: string | null;
      error: string | null;
    }>(
      `SELECT kind, scope, opened_at, resolved_at, detail->>'error' AS error FROM alerts
       WHERE opened_at > $1::timestamptz - interval '6 days' ORDER BY opened_at DESC LIMIT 20`,
      [since],
    ),
    db.query<{ n: string; median: number | null }>(
      `SELECT count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS median
       FROM probe_results WHERE trigger = 'breaker' AND NOT ok AND paused_after AND probed_at > $1`,
      [since],
    ),
    db.query<{ minute: string; pool: PoolName; listed: number; online: number }>(
      "SELECT minute, pool, listed, online FROM pool_rollup_history WHERE minute > $1 ORDER BY minute",
      [since],
    ),
  ]);

  const watchdog: NetworkStatus["watchdog"] = { peer: null, mbl: null };
  for (const r of checks.rows) {
    const w = watchdog[r.pool] ?? { at: new Date(r.run_at), passed: 0, failed: 0, failing: [] };
    watchdog[r.pool] = w;
    if (r.ok) w.passed++;
    else {
      w.failed++;
      w.failing.push(r.country);
    }
  }
  const points: NetworkStatus["history"] = { peer: [], mbl: [] };
  for (const r of history.rows)
    points[r.pool].push({ minute: new Date(r.minute), listed: r.listed, online: r.online });
  const run = listing.rows[0];
  const b = breaker.rows[0];
  return {
    generatedAt: now,
    stock,
    listing: run ? { at: new Date(run.finished_at ?? run.started_at), status: run.status } : null,
    watchdog,
    alerts: alerts.rows.map((a) => ({
      kind: a.kind,
      // A fleet alert's scope is `<pool>-<country>`; the watchdog's own one names an internal URL.
      scope: a.kind === "watchdog_fleet" ? a.scope : "the watchdog's vantage point",
      openedAt: new Date(a.opened_at),
      resolvedAt: a.resolved_at ? new Date(a.resolved_at) : null,
      error: a.error,
    })),
    breaker: {
      delists24h: Number(b?.n ?? 0),
      medianProbeMs: b?.median == null ? null : Math.round(Number(b.median)),
    },
    history: points,
  };
}
