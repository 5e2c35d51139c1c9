/**
 * Pool access keys (`pk_` id, `pak_` secret): the reseller pipeline that x402 mints through too.
 * Postgres is the record; every change is audited in the same transaction, and after the commit
 * the caller runs syncCredentialMirror so the gateway's Redis cache matches (write Postgres first,
 * then Redis: a failed Redis write is repaired by re-running the sync, which is idempotent).
 */
import {
  type CredentialCacheEntry,
  type CredentialTier,
  deleteCredentialCache,
  readCredentialState,
  writeCredentialCache,
} from "../../../shared/credentials.ts";
import type { Queryable } from "../../../shared/db/pool.ts";
import { hashSecret, newId, randomHex } from "../../../shared/ids.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";

export type { CredentialTier } from "../../../shared/credentials.ts";
export type CredentialPool = "mbl" | "peer" | "any";

/** A credentials table row as the Neon driver returns it (bigint as string, timestamptz as Date). */
export type CredentialRow = {
  id: string;
  account_id: string;
  name: string;
  secret_hash: string;
  retired_secret_hashes: string[];
  secret_hint: string;
  account_label: string;
  pool: CredentialPool;
  country: string;
  tier: CredentialTier;
  cap_bytes: string;
  enabled: boolean;
  suspended_reason: string | null;
  expires_at: Date | null;
  max_connections: number;
  /** a dedicated port's endpoint: the gateway routes this key there only (null = pool routing) */
  endpoint_id: string | null;
  used_bytes_persisted: string;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
};

/** A key as the API shows it. Byte counts are JSON numbers, exact up to 2^53 (9 PB). */
export interface PoolKey {
  id: string;
  name: string;
  username: string;
  accountLabel: string;
  pool: CredentialPool;
  country: string;
  tier: CredentialTier;
  capBytes: number;
  usedBytes: number;
  remainingBytes: number;
  enabled: boolean;
  suspendedReason: string | null;
  expiresAt: string | null;
  maxConnections: number;
  secretHint: string;
  createdAt: string;
  updatedAt: string;
}

export const DEFAULT_MAX_CONNECTIONS = 100;

/** A Postgres handle (a transaction for writes) and the clock. */
export interface TxDeps {
  db: Queryable;
  now(): Date;
}

export interface MintInput {
  accountId: string;
  /** who asked, for the audit log: the account id, `x402:<payment>`, ... */
  actor: string;
  tier: CredentialTier;
  capBytes: number;
  name?: string;
  /** username default; must equal the tier unless the tier is `any` (defaults to the tier) */
  pool?: CredentialPool;
  country?: string;
  expiresAt?: Date | null;
  maxConnections?: number;
  /** pins the key to one endpoint (a dedicated port); reserve the endpoint for it separately */
  endpointId?: string;
}

/** The username a key's holder starts from: `psx_<accountLabel>-<pool>-<country>`. */
export function usernameFor(row: Pick<CredentialRow, "account_label" | "pool" | "country">): string {
  return `psx_${row.account_label}-${row.pool}-${row.country}`;
}

/**
 * The state the gateway acts on. Same rule as shared/lua/cred_write.lua: a key at its cap is
 * suspended for `cap` whatever Postgres says, until a topup raises the cap.
 */
export function toPoolKey(row: CredentialRow, usedBytes: number): PoolKey {
  const capBytes = Number(row.cap_bytes);
  const atCap = usedBytes >= capBytes;
  const enabled = row.enabled && !atCap;
  return {
    id: row.id,
    name: row.name,
    username: usernameFor(row),
    accountLabel: row.account_label,
    pool: row.pool,
    country: row.country,
    tier: row.tier,
    capBytes,
    usedBytes,
    remainingBytes: Math.max(0, capBytes - usedBytes),
    enabled,
    suspendedReason: enabled ? null : row.enabled && atCap ? "cap" : (row.suspended_reason ?? "disabled"),
    expiresAt: row.expires_at ? new Date(row.expires_at).toISOString() : null,
    maxConnections: row.max_connections,
    secretHint: row.secret_hint,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

function newSecret(): string {
  return `pak_${randomHex(32)}`;
}

function hintOf(secret: string): string {
  return `${secret.slice(0, 8)}...`;
}

/** The account's username label, set on first use from its name (unique, [a-z0-9_]). */
export async function ensureAccountLabel(db: Queryable, accountId: string): Promise<string | null> {
  // No row lock on the common path: every x402 mint runs under the one house account.
  const { rows } = await db.query<{ name: string; username_label: string | null }>(
    "SELECT name, username_label FROM accounts WHERE id = $1",
    [accountId],
  );
  const account = rows[0];
  if (!account) return null;
  if (account.username_label) return account.username_label;
  const base =
    account.name
      .toLowerCase()
      .replace(/[^a-z0-9_]+/g, "_")
      .replace(/^_+|_+$/g, "")
      .slice(0, 40) || "acct";
  let label = base;
  for (let attempt = 0; attempt < 5; attempt++) {
    const taken = await db.query("SELECT 1 FROM accounts WHERE username_label = $1", [label]);
    if (taken.rows.length === 0) break;
    label = `${base}_${randomHex(3)}`;
  }
  // A concurrent first mint may have set it meanwhile: theirs wins, and we read it back.
  await db.query("UPDATE accounts SET username_label = $2 WHERE id = $1 AND username_label IS NULL", [
    accountId,
    label,
  ]);
  const { rows: after } = await db.query<{ username_label: string }>(
    "SELECT username_label FROM accounts WHERE id = $1",
    [accountId],
  );
  return after[0]?.username_label ?? null;
}

/**
 * Creates a key and returns its secret (the only time it exists in clear). Runs in the caller's
 * transaction, so x402 commits its payment row and the key together; call syncCredentialMirror
 * after the commit.
 */
export async function mintCredential({
  deps,
  input,
}: {
  deps: TxDeps;
  input: MintInput;
}): Promise<{ credential: CredentialRow; secret: string } | null> {
  const label = await ensureAccountLabel(deps.db, input.accountId);
  if (!label) return null;
  const secret = newSecret();
  const { rows } = await deps.db.query<CredentialRow>(
    `INSERT INTO credentials (id, account_id, name, secret_hash, secret_hint, account_label, pool, country,
                              tier, cap_bytes, expires_at, max_connections, endpoint_id, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14, $13, $13)
     RETURNING *`,
    [
      newId("pk"),
      input.accountId,
      input.name ?? "",
      await hashSecret(secret),
      hintOf(secret),
      label,
      input.pool ?? input.tier,
      input.country ?? "any",
      input.tier,
      String(input.capBytes),
      input.expiresAt ? input.expiresAt.toISOString() : null,
      input.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      deps.now().toISOString(),
      input.endpointId ?? null,
    ],
  );
  const credential = rows[0]!;
  await appendAudit(deps.db, {
    actor: input.actor,
    action: "credential.create",
    subject: credential.id,
    detail: {
      accountId: input.accountId,
      tier: credential.tier,
      pool: credential.pool,
      country: credential.country,
      capBytes: credential.cap_bytes,
      expiresAt: credential.expires_at,
      maxConnections: credential.max_connections,
      ...(credential.endpoint_id ? { endpointId: credential.endpoint_id } : {}),
    },
  });
  return { credential, secret };
}

/** One live (not deleted) key of the account; null when it does not exist or is another account's. */
export async function getCredential(
  db: Queryable,
  accountId: string,
  keyId: string,
  opts: { forUpdate?: boolean } = {},
): Promise<CredentialRow | null> {
  const { rows } = await db.query<CredentialRow>(
    `SELECT * FROM credentials WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL${opts.forUpdate ? " FOR UPDATE" : ""}`,
    [keyId, accountId],
  );
  return rows[0] ?? null;
}

/** The account's live keys, oldest first, `limit` after the key `after`. */
export async function listCredentials(
  db: Queryable,
  accountId: string,
  page: { limit: number; after?: string },
): Promise<CredentialRow[]> {
  const { rows } = await db.query<CredentialRow>(
    `SELECT * FROM credentials
      WHERE account_id = $1 AND deleted_at IS NULL
        AND ($3::text IS NULL OR (created_at, id) > (SELECT created_at, id FROM credentials WHERE id = $3))
      ORDER BY created_at, id
      LIMIT $2`,
    [accountId, page.limit, page.after ?? null],
  );
  return rows;
}

export interface CredentialPatch {
  name?: string;
  enabled?: boolean;
  expiresAt?: Date | null;
  maxConnections?: number;
}

/**
 * Applies a patch; disabling records `disabled`, enabling clears it (a key at its cap stays
 * suspended until a topup); a new expiry re-enables a key that expired.
 */
export async function updateCredential({
  deps,
  input,
}: {
  deps: TxDeps;
  input: { accountId: string; actor: string; keyId: string; patch: CredentialPatch };
}): Promise<CredentialRow | null> {
  const current = await getCredential(deps.db, input.accountId, input.keyId, { forUpdate: true });
  if (!current) return null;
  const { patch } = input;
  let enabled = patch.enabled ?? current.enabled;
  let reason = patch.enabled === undefined ? current.suspended_reason : enabled ? null : "disabled";
  if (
    patch.expiresAt !== undefined &&
    patch.enabled === undefined &&
    current.suspended_reason === "expired"
  ) {
    // A new (future or no) expiry is the way back for a key the cron disabled at its expiry.
    enabled = true;
    reason = null;
  }
  const { rows } = await deps.db.query<CredentialRow>(
    `UPDATE credentials
        SET name = $2, enabled = $3, suspended_reason = $4, expires_at = $5, max_connections = $6, updated_at = $7
      WHERE id = $1 RETURNING *`,
    [
      current.id,
      patch.name ?? current.name,
      enabled,
      reason,
      patch.expiresAt === undefined
        ? current.expires_at
        : patch.expiresAt === null
          ? null
          : patch.expiresAt.toISOString(),
      patch.maxConnections ?? current.max_connections,
      deps.now().toISOString(),
    ],
  );
  await appendAudit(deps.db, {
    actor: input.actor,
    action: "credential.update",
    subject: current.id,
    detail: {
      changed: Object.keys(patch),
      ...(patch.enabled === undefined ? {} : { enabled }),
      ...(patch.expiresAt === undefined ? {} : { expiresAt: patch.expiresAt }),
      ...(patch.maxConnections === undefined ? {} : { maxConnections: patch.maxConnections }),
    },
  });
  return rows[0] ?? null;
}

/** Adds bytes to the cap and re-enables a key the gateway suspended at its cap (not one its owner disabled). */
export async function topupCredential({
  deps,
  input,
}: {
  deps: TxDeps;
  input: { accountId: string; actor: string; keyId: string; addBytes: number };
}): Promise<CredentialRow | null> {
  const { rows } = await deps.db.query<CredentialRow>(
    `UPDATE credentials
        SET cap_bytes = cap_bytes + $3::bigint,
            enabled = CASE WHEN suspended_reason = 'cap' THEN true ELSE enabled END,
            suspended_reason = CASE WHEN suspended_reason = 'cap' THEN NULL ELSE suspended_reason END,
            updated_at = $4
      WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL
      RETURNING *`,
    [input.keyId, input.accountId, String(input.addBytes), deps.now().toISOString()],
  );
  const row = rows[0];
  if (!row) return null;
  await appendAudit(deps.db, {
    actor: input.actor,
    action: "credential.topup",
    subject: row.id,
    detail: { addBytes: String(input.addBytes), capBytes: row.cap_bytes },
  });
  return row;
}

/** A new secret under the same username; the old one stops authenticating at the next mirror sync. */
export async function regenerateCredential({
  deps,
  input,
}: {
  deps: TxDeps;
  input: { accountId: string; actor: string; keyId: string };
}): Promise<{ credential: CredentialRow; secret: string } | null> {
  const secret = newSecret();
  const { rows } = await deps.db.query<CredentialRow>(
    `UPDATE credentials
        SET retired_secret_hashes = array_append(retired_secret_hashes, secret_hash), secret_hash = $3,
            secret_hint = $4, updated_at = $5
      WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL
      RETURNING *`,
    [input.keyId, input.accountId, await hashSecret(secret), hintOf(secret), deps.now().toISOString()],
  );
  const credential = rows[0];
  if (!credential) return null;
  await appendAudit(deps.db, {
    actor: input.actor,
    action: "credential.regenerate",
    subject: credential.id,
    detail: {},
  });
  return { credential, secret };
}

/** Disables up to `limit` keys whose expiry passed; returns their ids (sync their mirror next). */
export async function expireCredentials(deps: TxDeps, limit: number): Promise<string[]> {
  const { rows } = await deps.db.query<{ id: string; expires_at: Date }>(
    `UPDATE credentials SET enabled = false, suspended_reason = 'expired', updated_at = $1
      WHERE id IN (SELECT id FROM credentials
                    WHERE enabled AND deleted_at IS NULL AND expires_at <= $1
                    ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
      RETURNING id, expires_at`,
    [deps.now().toISOString(), limit],
  );
  for (const row of rows) {
    await appendAudit(deps.db, {
      actor: "cron:credential-usage",
      action: "credential.expire",
      subject: row.id,
      detail: { expiresAt: row.expires_at },
    });
  }
  return rows.map((r) => r.id);
}

/** Soft-deletes a key (usage history stays); the mirror sync then removes it from Redis. */
export async function deleteCredential({
  deps,
  input,
}: {
  deps: TxDeps;
  input: { accountId: string; actor: string; keyId: string };
}): Promise<CredentialRow | null> {
  const { rows } = await deps.db.query<CredentialRow>(
    `UPDATE credentials SET deleted_at = $3, updated_at = $3
      WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL RETURNING *`,
    [input.keyId, input.accountId, deps.now().toISOString()],
  );
  const row = rows[0];
  if (!row) return null;
  await appendAudit(deps.db, {
    actor: input.actor,
    action: "credential.delete",
    subject: row.id,
    detail: {},
  });
  return row;
}

/** Whether the account had this key and deleted it. */
export async function wasDeleted(db: Queryable, accountId: string, keyId: string): Promise<boolean> {
  const { rows } = await db.query(
    "SELECT 1 FROM credentials WHERE id = $1 AND account_id = $2 AND deleted_at IS NOT NULL",
    [keyId, accountId],
  );
  return rows.length > 0;
}

export function cacheEntryOf(row: CredentialRow): CredentialCacheEntry {
  return {
    keyId: row.id,
    accountLabel: row.account_label,
    accountId: row.account_id,
    enabled: row.enabled,
    suspendedReason: row.suspended_reason,
    capBytes: Number(row.cap_bytes),
    expiresAtMs: row.expires_at ? new Date(row.expires_at).getTime() : null,
    tier: row.tier,
    maxConnections: row.max_connections,
    endpointId: row.endpoint_id,
    secretHash: row.secret_hash,
    retiredSecretHashes: row.retired_secret_hashes,
  };
}

/**
 * Makes the Redis mirror match Postgres for one key (written or removed). Idempotent: safe to run
 * again after a failure, or on every replay of a stored write. Returns false if no such key.
 */
export async function syncCredentialMirror(
  deps: { db: Queryable; redis: RedisClient },
  keyId: string,
): Promise<boolean> {
  const { rows } = await deps.db.query<CredentialRow>("SELECT * FROM credentials WHERE id = $1", [keyId]);
  const row = rows[0];
  if (!row) return false;
  if (row.deleted_at) {
    await deleteCredentialCache(deps.redis, row.id, [row.secret_hash, ...row.retired_secret_hashes]);
  } else {
    await writeCredentialCache(deps.redis, cacheEntryOf(row));
  }
  if (row.retired_secret_hashes.length > 0) {
    // Redis confirmed the old secrets are gone; forget them unless a regenerate raced in meanwhile.
    await deps.db.query(
      "UPDATE credentials SET retired_secret_hashes = '{}' WHERE id = $1 AND retired_secret_hashes = $2::text[]",
      [row.id, row.retired_secret_hashes],
    );
  }
  return true;
}

/** Rows with their live used bytes, as the API shows them. */
export async function withUsage(redis: RedisClient, rows: CredentialRow[]): Promise<PoolKey[]> {
  const live = await readCredentialState(
    redis,
    rows.map((r) => r.id),
  );
  return rows.map((r) => toPoolKey(r, live.get(r.id)?.usedBytes ?? 0));
}

export interface UsageDay {
  /** UTC date, YYYY-MM-DD */
  date: string;
  bytes: number;
}

/**
 * Per-day bytes for the last `days` UTC days (today last, zero-filled). Days come from the
 * persist job; today also counts what the gateway metered since its last run, so it is live.
 */
export async function usageSeries(
  deps: { db: Queryable; redis: RedisClient; now(): Date },
  row: CredentialRow,
  days: number,
): Promise<{ days: UsageDay[]; usedBytes: number }> {
  const today = deps.now().toISOString().slice(0, 10);
  const first = new Date(Date.parse(`${today}T00:00:00Z`) - (days - 1) * 86_400_000)
    .toISOString()
    .slice(0, 10);
  const { rows } = await deps.db.query<{ day: string; bytes: string }>(
    `SELECT to_char(day, 'YYYY-MM-DD') AS day, bytes FROM credential_usage_daily
      WHERE credential_id = $1 AND day BETWEEN $2::date AND $3::date`,
    [row.id, first, today],
  );
  const byDay = new Map(rows.map((r) => [r.day, Number(r.bytes)]));
  const live = await readCredentialState(deps.redis, [row.id]);
  const usedBytes = live.get(row.id)?.usedBytes ?? 0;
  const unpersisted = Math.max(0, usedBytes - Number(row.used_bytes_persisted));
  const series: UsageDay[] = [];
  for (let i = days - 1; i >= 0; i--) {
    const date = new Date(Date.parse(`${today}T00:00:00Z`) - i * 86_400_000).toISOString().slice(0, 10);
    series.push({ date, bytes: (byDay.get(date) ?? 0) + (date === today ? unpersisted : 0) });
  }
  return { days: series, usedBytes };
}
