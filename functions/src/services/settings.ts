import type { Queryable } from "../../../shared/db/pool.ts";

/** Reads one settings row's JSON value (rates, limits, regions are data, never code). */
export async function getSetting<T>(db: Queryable, key: string, fallback: T): Promise<T> {
  const { rows } = await db.query<{ value: T }>("SELECT value FROM settings WHERE key = $1", [key]);
  return rows[0]?.value ?? fallback;
}
