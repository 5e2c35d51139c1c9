import type { Queryable } from "../../../shared/db/pool.ts";

type PoolName = "mbl" | "peer";

/** Counts per pool and country from the rollup. Exit addresses are not in the rollup at all. */
export async function readStock(db: Queryable) {
  const { rows } = await db.query<{
    pool: PoolName;
    country: string;
    listed: number;
    online: number;
    computed_at: string;
  }>("SELECT pool, country, listed, online, computed_at FROM pool_rollup ORDER BY pool, country");
  const pools: Record<
    PoolName,
    { routable: number; countries: Record<string, { routable: number; online: number }> }
  > = {
    mbl: { routable: 0, countries: {} },
    peer: { routable: 0, countries: {} },
  };
  let updatedAt: string | null = null;
  for (const r of rows) {
    pools[r.pool].countries[r.country] = { routable: r.listed, online: r.online };
    pools[r.pool].routable += r.listed;
    updatedAt = new Date(r.computed_at).toISOString();
  }
  return { updatedAt, pools };
}

/** Countries with routable stock in a pool (the x402 402's live country list). */
export async function liveCountries(db: Queryable, pool: PoolName): Promise<string[]> {
  const { rows } = await db.query<{ country: string }>(
    "SELECT country FROM pool_rollup WHERE pool = $1 AND listed > 0 ORDER BY country",
    [pool],
  );
  return rows.map((r) => r.country);
}
