// The watchdog's writes: one row per check in `watchdog_checks`, and alerts opened on a streak of
// failed runs and resolved by a clean one (or when their group is no longer listed).
import type { Queryable } from "../shared/db/pool.ts";
import { newId } from "../shared/ids.ts";
import type { CheckResult, GroupCheck, GroupPool, SelfCheck } from "./watchdog-checks.ts";

export type AlertKind = "watchdog_self" | "watchdog_fleet";

export interface AlertChange {
  id: string;
  kind: AlertKind;
  scope: string;
}

/** The alert and check writes of one watchdog, bound to its database and settings. */
export function watchdogAlerts(
  db: Queryable,
  opts: { failsToAlert: number; proxyScope: string; groups?: readonly string[] },
) {
  async function record(runAt: Date, self: SelfCheck, checks: GroupCheck[]): Promise<void> {
    const selfError = self.gateway.error ?? self.target.error ?? null;
    const rows = [
      { pool: "self", country: null, ok: self.ok, latencyMs: self.target.latencyMs, error: selfError },
      ...checks.map((c) => ({ ...c, error: c.error ?? null })),
    ];
    await db.query(
      `INSERT INTO watchdog_checks (run_at, pool, country, ok, latency_ms, error)
       SELECT $1::timestamptz, * FROM unnest($2::text[], $3::text[], $4::bool[], $5::int[], $6::text[])`,
      [
        runAt.toISOString(),
        rows.map((r) => r.pool),
        rows.map((r) => r.country),
        rows.map((r) => r.ok),
        rows.map((r) => (r.ok ? (r.latencyMs ?? null) : null)),
        rows.map((r) => (r.ok ? null : (r.error ?? "timeout"))),
      ],
    );
  }

  /** Opens (or refreshes) the scope's alert once its streak reaches the threshold. */
  async function failing(
    kind: AlertKind,
    scope: string,
    streak: number,
    detail: Record<string, unknown>,
    at: Date,
  ): Promise<AlertChange | undefined> {
    const body = JSON.stringify({ ...detail, consecutiveFailures: streak, proxy: opts.proxyScope });
    if (streak < opts.failsToAlert) {
      // Below the threshold (e.g. just after a restart) an alert that is already open stays open.
      await db.query(
        "UPDATE alerts SET last_seen_at = $3, detail = $4::jsonb WHERE kind = $1 AND scope = $2 AND resolved_at IS NULL",
        [kind, scope, at.toISOString(), body],
      );
      return undefined;
    }
    const { rows } = await db.query<{ id: string; inserted: boolean }>(
      `INSERT INTO alerts (id, kind, scope, detail, opened_at, last_seen_at)
       VALUES ($1, $2, $3, $4::jsonb, $5, $5)
       ON CONFLICT (kind, scope) WHERE resolved_at IS NULL
       DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at, detail = EXCLUDED.detail
       RETURNING id, (xmax = 0) AS inserted`,
      [newId("alert"), kind, scope, body, at.toISOString()],
    );
    const row = rows[0];
    return row?.inserted ? { id: row.id, kind, scope } : undefined;
  }

  async function resolve(kind: AlertKind, scope: string, at: Date): Promise<AlertChange[]> {
    const { rows } = await db.query<{ id: string }>(
      `UPDATE alerts SET resolved_at = GREATEST(opened_at, $3::timestamptz)
       WHERE kind = $1 AND scope = $2 AND resolved_at IS NULL RETURNING id`,
      [kind, scope, at.toISOString()],
    );
    return rows.map((r) => ({ id: r.id, kind, scope }));
  }

  /** Fleet alerts in this watchdog's remit whose group is no longer listed: nothing left to sell there. */
  async function resolveUnlisted(
    pools: readonly GroupPool[],
    checked: string[],
    at: Date,
  ): Promise<AlertChange[]> {
    const { rows } = await db.query<{ id: string; scope: string }>(
      `UPDATE alerts SET resolved_at = GREATEST(opened_at, $1::timestamptz),
              detail = detail || '{"resolvedBy": "not_listed"}'::jsonb
       WHERE kind = 'watchdog_fleet' AND resolved_at IS NULL
         AND split_part(scope, '-', 1) = ANY($2::text[])
         AND NOT (scope = ANY($3::text[]))
         AND ($4::text[] IS NULL OR scope = ANY($4::text[]))
       RETURNING id, scope`,
      [at.toISOString(), pools, checked, opts.groups ?? null],
    );
    return rows.map((r) => ({ id: r.id, kind: "watchdog_fleet" as const, scope: r.scope }));
  }

  return { record, failing, resolve, resolveUnlisted };
}

export function summary(c: CheckResult): Record<string, unknown> {
  return {
    ok: c.ok,
    ...(c.error ? { error: c.error } : {}),
    ...(c.detail ? { detail: c.detail.slice(0, 200) } : {}),
    ...(c.latencyMs !== undefined ? { latencyMs: c.latencyMs } : {}),
  };
}

export function countBy(items: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of items) out[i] = (out[i] ?? 0) + 1;
  return out;
}
