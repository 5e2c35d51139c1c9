/**
 * Production modem exits: Postgres is the record, the selection pool in Redis is where the gateway
 * finds them. Registering is keyed by host:port, so repeating a registration is safe.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import type { IpType } from "../../../shared/dsl.ts";
import { newId } from "../../../shared/ids.ts";
import { delistEndpoint, listEndpoint } from "../../../shared/pool.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";

export type ModemExitRow = {
  id: string;
  host: string;
  port: number;
  country: string;
  carrier: string | null;
  city: string | null;
  ip_type: IpType;
  /** operator webhook that makes the modem re-dial (dedicated-port rotation); never shown to customers */
  rotation_url: string | null;
  /** upstream proxy credentials, sealed (shared/upstream-auth.ts); null = none */
  upstream_auth_sealed: string | null;
  /** the farmer paid for this exit's traffic (ADR 0017); null = the house's own modem */
  account_id: string | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
};

export interface ModemExitInput {
  host: string;
  port: number;
  country: string;
  carrier?: string;
  city?: string;
  ipType?: IpType;
  rotationUrl?: string;
  /** sealed upstream credentials: a value sets them, null clears them, undefined keeps what is stored */
  upstreamAuthSealed?: string | null;
  /** the farmer account: a value assigns it, null makes it the house's, undefined keeps what is stored */
  farmerAccountId?: string | null;
}

/** Registers (or updates the registration at the same host:port); `created` says which. */
export async function registerModemExit(
  db: Queryable,
  actor: string,
  input: ModemExitInput,
): Promise<{ exit: ModemExitRow; created: boolean }> {
  const values = [
    input.country,
    input.carrier ?? null,
    input.city ?? null,
    input.ipType ?? "mobile",
    input.rotationUrl ?? null,
  ];
  const auth = [
    input.upstreamAuthSealed !== undefined,
    input.upstreamAuthSealed ?? null,
    input.farmerAccountId !== undefined,
    input.farmerAccountId ?? null,
  ];
  const updateSql = `UPDATE modem_exits SET country = $3, carrier = $4, city = $5, ip_type = $6, rotation_url = $7,
            upstream_auth_sealed = CASE WHEN $8::boolean THEN $9 ELSE upstream_auth_sealed END,
            account_id = CASE WHEN $10::boolean THEN $11 ELSE account_id END, updated_at = now()
      WHERE host = $1 AND port = $2 AND deleted_at IS NULL RETURNING *`;
  const updated = await db.query<ModemExitRow>(updateSql, [input.host, input.port, ...values, ...auth]);
  let exit = updated.rows[0];
  let created = !exit;
  if (!exit) {
    // Two registrations of one address at once: the loser's insert yields to the winner's row
    // (modem_exits_address), and it updates that row like a re-registration.
    const inserted = await db.query<ModemExitRow>(
      `INSERT INTO modem_exits (id, host, port, country, carrier, city, ip_type, rotation_url, created_by,
                                upstream_auth_sealed, account_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
       ON CONFLICT (host, port) WHERE deleted_at IS NULL DO NOTHING RETURNING *`,
      [
        newId("modem", 8),
        input.host,
        input.port,
        ...values,
        actor,
        input.upstreamAuthSealed ?? null,
        input.farmerAccountId ?? null,
      ],
    );
    exit = inserted.rows[0];
    if (!exit) {
      created = false;
      exit = (await db.query<ModemExitRow>(updateSql, [input.host, input.port, ...values, ...auth])).rows[0]!;
    }
  }
  await appendAudit(db, {
    actor,
    action: created ? "modem_exit.create" : "modem_exit.update",
    subject: exit.id,
    detail: {
      host: exit.host,
      port: exit.port,
      country: exit.country,
      ipType: exit.ip_type,
      rotationWebhook: exit.rotation_url !== null,
      upstreamAuth: exit.upstream_auth_sealed !== null,
      farmerAccountId: exit.account_id,
    },
  });
  return { exit, created };
}

/** Live registrations, each with the end of its active dedicated-port reservation (if rented). */
export async function listModemExits(
  db: Queryable,
): Promise<(ModemExitRow & { reserved_until: Date | null })[]> {
  const { rows } = await db.query<ModemExitRow & { reserved_until: Date | null }>(
    `SELECT m.*, r.ends_at AS reserved_until FROM modem_exits m
       LEFT JOIN modem_reservations r ON r.modem_exit_id = m.id AND r.released_at IS NULL
      WHERE m.deleted_at IS NULL ORDER BY m.created_at, m.id`,
  );
  return rows;
}

/** One registration by id, deleted or not. */
export async function findModemExit(db: Queryable, id: string): Promise<ModemExitRow | null> {
  const { rows } = await db.query<ModemExitRow>("SELECT * FROM modem_exits WHERE id = $1", [id]);
  return rows[0] ?? null;
}

/** Soft-deletes a registration; null when there is no live one with that id. */
export async function removeModemExit(
  db: Queryable,
  actor: string,
  id: string,
): Promise<ModemExitRow | null> {
  const { rows } = await db.query<ModemExitRow>(
    "UPDATE modem_exits SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL RETURNING *",
    [id],
  );
  const exit = rows[0];
  if (!exit) return null;
  await appendAudit(db, { actor, action: "modem_exit.delete", subject: exit.id, detail: {} });
  return exit;
}

/** Puts a live registration up for sale in the selection pool (pool mbl, modem caps), or takes it off. */
export async function syncModemListing(redis: RedisClient, exit: ModemExitRow): Promise<void> {
  if (exit.deleted_at) {
    await delistEndpoint(redis, exit.id);
    return;
  }
  await listEndpoint(redis, {
    endpointId: exit.id,
    pool: "mbl",
    country: exit.country,
    ipType: exit.ip_type,
    // Modem caps do not depend on a speed tier; the prober fills one in once it has measured.
    speedTier: "unknown",
    kind: "modem",
    carrier: exit.carrier ?? undefined,
    city: exit.city ?? undefined,
    host: exit.host,
    port: exit.port,
    upstreamAuth: exit.upstream_auth_sealed ?? undefined,
  });
}

/** An account's kind, or null when there is none: a modem exit belongs to a farmer or supplier account (ADR 0017). */
export async function accountKindOf(db: Queryable, accountId: string): Promise<string | null> {
  const { rows } = await db.query<{ kind: string }>("SELECT kind FROM accounts WHERE id = $1", [accountId]);
  return rows[0]?.kind ?? null;
}
