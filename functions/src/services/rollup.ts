import { type Pool, withTransaction } from "../../../shared/db/pool.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { readPoolSnapshot, type SnapshotEntry } from "./listing.ts";

export interface RollupRow {
  pool: "peer" | "mbl";
  country: string;
  registered: number;
  online: number;
  verified: number;
  listed: number;
  tiers: { fast: number; medium: number; slow: number; unknown: number };
}

/**
 * Per pool and country counts from one Redis snapshot (the state that routes customers) plus
 * registered devices from Postgres. Pure: the job and the tests share it.
 */
export function computeRollup(snapshot: SnapshotEntry[], registered: Map<string, number>): RollupRow[] {
  const rows = new Map<string, RollupRow>();
  const row = (pool: "peer" | "mbl", country: string) => {
    const k = `${pool}:${country}`;
    let r = rows.get(k);
    if (!r) {
      r = {
        pool,
        country,
        registered: 0,
        online: 0,
        verified: 0,
        listed: 0,
        tiers: { fast: 0, medium: 0, slow: 0, unknown: 0 },
      };
      rows.set(k, r);
    }
    return r;
  };
  for (const e of snapshot) {
    const isModem = e.endpoint.kind === "modem";
    const pool = isModem || e.endpoint.pool === "mbl" ? "mbl" : "peer";
    const country = (
      (isModem ? e.endpoint.country : e.presence.country) ??
      e.endpoint.country ??
      ""
    ).toLowerCase();
    if (!country) continue;
    const r = row(pool, country);
    if (e.online || isModem) r.online++;
    if (e.probe.verified === "1") r.verified++;
    // A rented (dedicated) modem routes its renter only: it is not stock anyone else can buy.
    if (e.listed && !e.reservedFor) {
      r.listed++;
      const t = e.endpoint.speedTier;
      r.tiers[t === "fast" || t === "medium" || t === "slow" ? t : "unknown"]++;
    }
  }
  for (const [country, n] of registered) row("peer", country).registered = n;
  return [...rows.values()].sort(
    (a, b) => a.pool.localeCompare(b.pool) || a.country.localeCompare(b.country),
  );
}

/**
 * Recomputes the rollup and replaces the table in one transaction (readers never see half of it).
 * Runs that overlap take turns; the last to commit wins. That may be the older run, whose figures
 * then stand until the next minute's run: stale by a minute at worst, where refusing older runs
 * would let one row stamped ahead of the clock (a hand insert, a skewed writer) freeze the table.
 */
export async function refreshRollup(
  deps: { redis: RedisClient; db: Pool },
  now: Date,
  /** Redis's time in ms, for the presence cut-off (relays stamp presence by Redis's clock). */
  redisNowMs = now.getTime(),
): Promise<RollupRow[]> {
  const snapshot = await readPoolSnapshot(deps.redis, redisNowMs);
  const reg = await deps.db.query<{ country: string; n: string }>(
    "SELECT lower(country_hint) AS country, count(*) AS n FROM devices WHERE country_hint IS NOT NULL GROUP BY 1",
  );
  const rows = computeRollup(snapshot, new Map(reg.rows.map((r) => [r.country, Number(r.n)])));
  const col = <K extends keyof RollupRow>(k: K) => rows.map((r) => r[k]);
  const tier = (t: keyof RollupRow["tiers"]) => rows.map((r) => r.tiers[t]);
  await withTransaction(deps.db, async (tx) => {
    // Cron runs overlap when one is slow. Two DELETE-then-INSERTs at once both delete the old rows
    // and the second INSERT hits pool_rollup_pkey; this mode admits one writer at a time and still
    // lets readers read the old rows until the commit.
    await tx.query("LOCK TABLE pool_rollup IN SHARE ROW EXCLUSIVE MODE");
    await tx.query("DELETE FROM pool_rollup");
    await tx.query(
      `INSERT INTO pool_rollup (pool, country, registered, online, verified, listed, tier_fast, tier_medium, tier_slow, tier_unknown, computed_at)
     SELECT *, $11::timestamptz FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[], $6::int[], $7::int[], $8::int[], $9::int[], $10::int[])`,
      [
        col("pool"),
        col("country"),
        col("registered"),
        col("online"),
        col("verified"),
        col("listed"),
        tier("fast"),
        tier("medium"),
        tier("slow"),
        tier("unknown"),
        now.toISOString(),
      ],
    );
    // One point per pool per minute for the status chart; a second run in the same minute overwrites.
    await tx.query(
      `INSERT INTO pool_rollup_history (minute, pool, online, listed, countries)
       SELECT date_trunc('minute', $1::timestamptz), p.pool,
              COALESCE(sum(r.online), 0), COALESCE(sum(r.listed), 0), count(*) FILTER (WHERE r.listed > 0)
       FROM (VALUES ('peer'), ('mbl')) AS p(pool) LEFT JOIN pool_rollup r ON r.pool = p.pool
       GROUP BY p.pool
       ON CONFLICT (minute, pool) DO UPDATE
         SET online = EXCLUDED.online, listed = EXCLUDED.listed, countries = EXCLUDED.countries`,
      [now.toISOString()],
    );
    await tx.query("DELETE FROM pool_rollup_history WHERE minute < $1::timestamptz - interval '7 days'", [
      now.toISOString(),
    ]);
  });
  return rows;
}
