import type { Queryable } from "../../shared/db/pool.ts";

/**
 * A loop's `skipped` job_runs rows since `since`, oldest first, for the given reasons only: other
 * test files' loops write skip rows under the same job names meanwhile.
 */
export async function loopSkips(db: Queryable, loop: string, since: Date, reasons: string[]) {
  const { rows } = await db.query<{ detail: unknown }>(
    "SELECT detail FROM job_runs WHERE job = $1 AND status = 'skipped' AND started_at >= $2 AND detail->>'reason' = ANY($3) ORDER BY id",
    [loop, since.toISOString(), reasons],
  );
  return rows;
}
