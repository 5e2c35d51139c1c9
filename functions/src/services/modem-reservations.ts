/**
 * Dedicated-port reservations of production modems (docs/adr/0005-x402-dedicated-port.md).
 * Postgres is the record (`modem_reservations`, one live row per modem by a partial UNIQUE index);
 * Redis `ep:{id}:reserved` is what routing obeys: while it names a key, the modem is in no shared
 * index and selects for that key only. Postgres is written first, Redis after the commit, and the
 * cron re-asserts Redis from Postgres every minute, so a failed Redis write heals within a minute.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { newId } from "../../../shared/ids.ts";
import { freeEndpoints, releaseEndpoint, reserveEndpoint } from "../../../shared/pool.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";

type PoolRedis = Pick<RedisClient, "evalsha" | "eval">;

export interface ModemFilter {
  /** ISO-2, or "any" */
  country: string;
  /** DSL form of the carrier name; undefined = any */
  carrier: string | undefined;
}

export interface FreeModem {
  id: string;
  country: string;
  carrier: string | null;
  hasRotationUrl: boolean;
}

export type ReservationRow = {
  id: string;
  modem_exit_id: string;
  credential_id: string;
  starts_at: Date;
  ends_at: Date;
  released_at: Date | null;
  released_reason: string | null;
  country: string;
  carrier: string | null;
  rotation_url: string | null;
};

const UNRESERVED = `m.deleted_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM modem_reservations r WHERE r.modem_exit_id = m.id AND r.released_at IS NULL)`;

/**
 * Modems that can be rented now: registered, without a live reservation in Postgres, and listed
 * (healthy, on sale) without a reservation in Redis.
 */
export async function listFreeModems(
  deps: { db: Queryable; redis: PoolRedis },
  filter: ModemFilter = { country: "any", carrier: undefined },
): Promise<FreeModem[]> {
  const { rows } = await deps.db.query<{
    id: string;
    country: string;
    carrier: string | null;
    has_rotation_url: boolean;
  }>(
    `SELECT m.id, m.country, m.carrier, m.rotation_url IS NOT NULL AS has_rotation_url
       FROM modem_exits m
      WHERE ${UNRESERVED}
        AND ($1::text = 'any' OR m.country = $1) AND ($2::text IS NULL OR m.carrier = $2)
      ORDER BY m.created_at, m.id`,
    [filter.country, filter.carrier ?? null],
  );
  const free = new Set(
    await freeEndpoints(
      deps.redis,
      rows.map((r) => r.id),
    ),
  );
  return rows
    .filter((r) => free.has(r.id))
    .map((r) => ({ id: r.id, country: r.country, carrier: r.carrier, hasRotationUrl: r.has_rotation_url }));
}

/** Free modems per country and carrier: counts only, never an address or an id. */
export function countFree(
  modems: FreeModem[],
): Record<string, { free: number; carriers: Record<string, number> }> {
  const out: Record<string, { free: number; carriers: Record<string, number> }> = {};
  for (const m of modems) {
    const c = out[m.country] ?? { free: 0, carriers: {} };
    out[m.country] = c;
    c.free++;
    if (m.carrier) c.carriers[m.carrier] = (c.carriers[m.carrier] ?? 0) + 1;
  }
  return out;
}

export type LockResult =
  | { ok: true; modem: { id: string; country: string; carrier: string | null } }
  | { ok: false; reason: "no_free_modem" };

/**
 * Inside the purchase transaction: locks one free modem among `candidates` (ids listed in Redis),
 * preferring modems with a rotation webhook. SKIP LOCKED: a concurrent buyer skips the modem this
 * transaction holds instead of waiting for it, so two buyers never get the same modem.
 */
export async function lockFreeModem(tx: Queryable, candidates: string[]): Promise<LockResult> {
  if (candidates.length === 0) return { ok: false, reason: "no_free_modem" };
  const { rows } = await tx.query<{ id: string; country: string; carrier: string | null }>(
    `SELECT m.id, m.country, m.carrier FROM modem_exits m
      WHERE m.id = ANY($1::text[]) AND ${UNRESERVED}
      ORDER BY (m.rotation_url IS NULL), m.created_at, m.id
      FOR UPDATE OF m SKIP LOCKED LIMIT 1`,
    [candidates],
  );
  const modem = rows[0];
  return modem ? { ok: true, modem } : { ok: false, reason: "no_free_modem" };
}

/**
 * Records the reservation of a locked modem for a credential. False when a reservation committed
 * after this transaction's snapshot took the modem (the partial UNIQUE index refuses the second).
 */
export async function insertReservation(
  tx: Queryable,
  input: { modemExitId: string; credentialId: string; startsAt: Date; endsAt: Date; actor: string },
): Promise<string | null> {
  const id = newId("mres");
  const { rows } = await tx.query<{ id: string }>(
    `INSERT INTO modem_reservations (id, modem_exit_id, credential_id, starts_at, ends_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id`,
    [id, input.modemExitId, input.credentialId, input.startsAt.toISOString(), input.endsAt.toISOString()],
  );
  if (!rows[0]) return null;
  await appendAudit(tx, {
    actor: input.actor,
    action: "modem.reserve",
    subject: input.modemExitId,
    detail: { reservationId: id, credentialId: input.credentialId, endsAt: input.endsAt.toISOString() },
  });
  return id;
}

/** The reservation a dedicated credential holds (live or ended), with its modem's public facts. */
export async function reservationOfCredential(
  db: Queryable,
  credentialId: string,
): Promise<ReservationRow | null> {
  const { rows } = await db.query<ReservationRow>(
    `SELECT r.*, m.country, m.carrier, m.rotation_url FROM modem_reservations r
       JOIN modem_exits m ON m.id = r.modem_exit_id
      WHERE r.credential_id = $1`,
    [credentialId],
  );
  return rows[0] ?? null;
}

/** Redis routing for a freshly committed reservation (also what the reconcile re-asserts). */
export function applyReservation(redis: PoolRedis, modemExitId: string, credentialId: string) {
  return reserveEndpoint(redis, modemExitId, credentialId);
}

// Per run: bounds one cron invocation; the next minute takes the rest.
const MAX_RELEASES = 200;

/**
 * Ends reservations whose time is up: the modem goes back into the shared pool (Redis first, only
 * if it still names that credential), then Postgres records it. A Redis failure leaves the row
 * live, so the next run tries again; the credential itself expires at the same instant.
 */
export async function releaseDueReservations(
  deps: { db: Queryable; redis: PoolRedis; now(): Date },
  limit = MAX_RELEASES,
): Promise<{ released: number; failures: number }> {
  const now = deps.now().toISOString();
  const { rows } = await deps.db.query<{ id: string; modem_exit_id: string; credential_id: string }>(
    `SELECT id, modem_exit_id, credential_id FROM modem_reservations
      WHERE released_at IS NULL AND ends_at <= $1 ORDER BY ends_at LIMIT $2`,
    [now, limit],
  );
  let released = 0;
  let failures = 0;
  for (const r of rows) {
    try {
      await releaseEndpoint(deps.redis, r.modem_exit_id, r.credential_id);
    } catch {
      failures++;
      continue;
    }
    const { rows: done } = await deps.db.query(
      `UPDATE modem_reservations SET released_at = $2, released_reason = 'expired'
        WHERE id = $1 AND released_at IS NULL RETURNING id`,
      [r.id, now],
    );
    if (!done[0]) continue;
    await appendAudit(deps.db, {
      actor: "cron:dedicated-reservations",
      action: "modem.release",
      subject: r.modem_exit_id,
      detail: { reservationId: r.id, credentialId: r.credential_id, reason: "expired" },
    });
    released++;
  }
  return { released, failures };
}

/**
 * Makes Redis match Postgres: re-asserts every live reservation (healing a write lost after a
 * commit) and ends, once more, those released in the last hour (an overlapping run may have
 * re-asserted one just before it was released). Both calls are idempotent.
 */
export async function reconcileReservations(deps: {
  db: Queryable;
  redis: PoolRedis;
  now(): Date;
}): Promise<{ reasserted: number; failures: number }> {
  const now = deps.now();
  const { rows } = await deps.db.query<{ modem_exit_id: string; credential_id: string; live: boolean }>(
    `SELECT modem_exit_id, credential_id, released_at IS NULL AS live FROM modem_reservations
      WHERE (released_at IS NULL AND ends_at > $1) OR released_at > $2`,
    [now.toISOString(), new Date(now.getTime() - 3_600_000).toISOString()],
  );
  let reasserted = 0;
  let failures = 0;
  for (const r of rows) {
    try {
      if (r.live) {
        await applyReservation(deps.redis, r.modem_exit_id, r.credential_id);
        reasserted++;
      } else {
        await releaseEndpoint(deps.redis, r.modem_exit_id, r.credential_id);
      }
    } catch {
      failures++;
    }
  }
  return { reasserted, failures };
}
