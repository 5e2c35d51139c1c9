/**
 * Alerts and the fleet watchdog's latest checks, for operators. The watchdog (prober/watchdog.ts)
 * is the only writer; this side only reads (tables: migration 0007).
 */
import type { Queryable } from "../../../shared/db/pool.ts";

export type AlertRow = {
  id: string;
  kind: "watchdog_self" | "watchdog_fleet";
  scope: string;
  detail: Record<string, unknown>;
  opened_at: Date;
  last_seen_at: Date;
  resolved_at: Date | null;
};

export type WatchdogCheckRow = {
  pool: "peer" | "mbl" | "self";
  country: string | null;
  run_at: Date;
  ok: boolean;
  latency_ms: number | null;
  error: string | null;
};

export const ALERTS_LIMIT = 200;
/** groups not checked for this long (delisted, out of the watchdog's remit) drop out of the view */
export const CHECKS_WINDOW_HOURS = 24;

/** Newest first; only unresolved ones when `open`. */
export async function listAlerts(db: Queryable, opts: { open: boolean }): Promise<AlertRow[]> {
  const { rows } = await db.query<AlertRow>(
    `SELECT id, kind, scope, detail, opened_at, last_seen_at, resolved_at FROM alerts
     WHERE NOT $1::bool OR resolved_at IS NULL
     ORDER BY opened_at DESC, id LIMIT $2`,
    [opts.open, ALERTS_LIMIT],
  );
  return rows;
}

/** The latest watchdog check per pool and country (and the self-check) among recent runs. */
export async function latestWatchdogChecks(db: Queryable): Promise<WatchdogCheckRow[]> {
  const { rows } = await db.query<WatchdogCheckRow>(
    `SELECT DISTINCT ON (pool, country) pool, country, run_at, ok, latency_ms, error
     FROM watchdog_checks WHERE run_at > now() - make_interval(hours => $1)
     ORDER BY pool, country, run_at DESC`,
    [CHECKS_WINDOW_HOURS],
  );
  return rows;
}
