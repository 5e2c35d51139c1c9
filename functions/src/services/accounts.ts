/**
 * Accounts and their scoped API keys (ADR 0009): operators create accounts and issue, list and
 * revoke keys; an account rotates its own keys with a grace period for the old one. Secrets are
 * returned once and stored as SHA-256 only.
 */
import {
  type AccountKind,
  type ApiKeyScope,
  insertApiKey,
  newApiKeySecret,
} from "../../../shared/accounts.ts";
import { type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import { newId } from "../../../shared/ids.ts";
import type { Deps } from "../deps.ts";
import { appendAudit } from "./audit.ts";
import type { ApiKeyAccount } from "./auth.ts";
import { publishDeviceRevocations, revokeDevicesOfKey } from "./devices.ts";

/** How long a rotated key keeps working: long enough to roll a fleet's config, short enough to matter. */
export const ROTATION_GRACE_MS = 24 * 3600 * 1000;

export type AccountRow = {
  id: string;
  name: string;
  kind: AccountKind;
  created_at: string | Date;
  resell_allowance_bytes: string | null;
  resell_max_connections: number | null;
};

export type ApiKeyRow = {
  id: string;
  account_id: string;
  hint: string;
  scopes: ApiKeyScope[];
  created_at: string | Date;
  revoked_at: string | Date | null;
  expires_at: string | Date | null;
  rotated_to: string | null;
};

const KEY_COLUMNS = "id, account_id, hint, scopes, created_at, revoked_at, expires_at, rotated_to";

export async function createAccount({
  deps,
  input,
}: {
  deps: Pick<Deps, "db">;
  input: {
    actor: string;
    name: string;
    kind: AccountKind;
    resellAllowanceBytes?: number;
    resellMaxConnections?: number;
  };
}): Promise<AccountRow> {
  const id = newId("acct", 8);
  return withTransaction(deps.db, async (tx) => {
    const { rows } = await tx.query<AccountRow>(
      `INSERT INTO accounts (id, name, kind, resell_allowance_bytes, resell_max_connections)
     VALUES ($1, $2, $3, $4, $5)
     RETURNING id, name, kind, created_at, resell_allowance_bytes::text, resell_max_connections`,
      [
        id,
        input.name,
        input.kind,
        input.resellAllowanceBytes === undefined ? null : String(input.resellAllowanceBytes),
        input.resellMaxConnections ?? null,
      ],
    );
    await appendAudit(tx, {
      actor: input.actor,
      action: "account.create",
      subject: id,
      detail: { kind: input.kind },
    });
    return rows[0]!;
  });
}

export async function getAccount(db: Queryable, accountId: string): Promise<AccountRow | null> {
  const { rows } = await db.query<AccountRow>(
    `SELECT id, name, kind, created_at, resell_allowance_bytes::text, resell_max_connections
       FROM accounts WHERE id = $1`,
    [accountId],
  );
  return rows[0] ?? null;
}

/** Issues a key on an account; null when the account does not exist. */
export async function issueApiKey({
  deps,
  input,
}: {
  deps: Pick<Deps, "db">;
  input: { actor: string; accountId: string; scopes: ApiKeyScope[] };
}): Promise<{ key: ApiKeyRow; apiKey: string } | null> {
  return withTransaction(deps.db, async (tx) => {
    if (!(await getAccount(tx, input.accountId))) return null;
    const { apiKey, apiKeyId } = await insertApiKey(tx, {
      accountId: input.accountId,
      scopes: input.scopes,
      createdBy: input.actor,
    });
    await appendAudit(tx, {
      actor: input.actor,
      action: "api_key.issue",
      subject: apiKeyId,
      detail: { accountId: input.accountId, scopes: input.scopes },
    });
    const key = await getApiKey(tx, apiKeyId);
    return { key: key!, apiKey };
  });
}

export async function getApiKey(db: Queryable, keyId: string): Promise<ApiKeyRow | null> {
  const { rows } = await db.query<ApiKeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = $1`, [keyId]);
  return rows[0] ?? null;
}

/** An account's keys, oldest first, revoked ones included (never a secret or its hash). */
export async function listApiKeys(db: Queryable, accountId: string): Promise<ApiKeyRow[]> {
  const { rows } = await db.query<ApiKeyRow>(
    `SELECT ${KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_at, id`,
    [accountId],
  );
  return rows;
}

/**
 * Revokes a key at once: it stops authenticating, and the devices it registered lose their refresh
 * tokens and JWTs (their relay sockets close). Revoking a revoked key re-announces its devices'
 * generations, so a retry after a Redis failure finishes the job. Null when there is no such key.
 */
export async function revokeApiKey({
  deps,
  input,
}: {
  deps: Pick<Deps, "db" | "redis">;
  input: { actor: string; keyId: string };
}): Promise<{ key: ApiKeyRow; devicesRevoked: number } | null> {
  const out = await withTransaction(deps.db, async (tx) => {
    const { rows } = await tx.query<ApiKeyRow>(
      `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING ${KEY_COLUMNS}`,
      [input.keyId],
    );
    const key = rows[0];
    if (!key) return null;
    const devices = await revokeDevicesOfKey(tx, input.keyId);
    await appendAudit(tx, {
      actor: input.actor,
      action: "api_key.revoke",
      subject: input.keyId,
      detail: { accountId: key.account_id, devices: devices.length },
    });
    return { key, devices };
  });
  if (!out) return null;
  await publishDeviceRevocations(deps.redis, out.devices);
  return { key: out.key, devicesRevoked: out.devices.length };
}

export type RotateFailure = {
  ok: false;
  code: "E_NOT_FOUND" | "E_CONFLICT" | "E_SCOPE_REQUIRED";
  message: string;
  details?: Record<string, unknown>;
};

/**
 * Replaces one of the caller's account keys with a new secret carrying the same scopes; the old
 * key keeps working for ROTATION_GRACE_MS. A key may only rotate keys whose scopes it holds all of
 * (a `supply` key sitting on devices must not mint a `resell` secret).
 */
export async function rotateApiKey({
  deps,
  input,
}: {
  deps: Pick<Deps, "db" | "now">;
  input: { caller: ApiKeyAccount; keyId: string };
}): Promise<{ ok: true; key: ApiKeyRow; apiKey: string; oldKey: ApiKeyRow } | RotateFailure> {
  const now = deps.now();
  return withTransaction(deps.db, async (tx) => {
    const { rows } = await tx.query<ApiKeyRow>(
      `SELECT ${KEY_COLUMNS} FROM api_keys
        WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)
        FOR UPDATE`,
      [input.keyId, input.caller.accountId, now.toISOString()],
    );
    const old = rows[0];
    if (!old)
      return { ok: false, code: "E_NOT_FOUND", message: `no live API key ${input.keyId} on this account` };
    if (old.rotated_to)
      return {
        ok: false,
        code: "E_CONFLICT",
        message: `key ${old.id} was already rotated (to ${old.rotated_to}); rotate that one instead`,
      };
    const missing = old.scopes.filter((s) => !input.caller.scopes.includes(s));
    if (missing.length > 0)
      return {
        ok: false,
        code: "E_SCOPE_REQUIRED",
        message: `rotating ${old.id} needs a key holding all of its scopes; this key lacks ${missing.map((s) => `\`${s}\``).join(", ")}`,
        details: { requiredScope: missing[0] },
      };
    const fresh = await newApiKeySecret();
    await tx.query(
      `INSERT INTO api_keys (id, account_id, key_hash, hint, scopes, created_by)
       VALUES ($1, $2, $3, $4, $5, $6)`,
      [fresh.keyId, old.account_id, fresh.hash, fresh.hint, old.scopes, input.caller.accountId],
    );
    const expiresAt = new Date(now.getTime() + ROTATION_GRACE_MS).toISOString();
    const updated = await tx.query<ApiKeyRow>(
      `UPDATE api_keys SET rotated_to = $2, expires_at = LEAST(COALESCE(expires_at, $3::timestamptz), $3::timestamptz)
        WHERE id = $1 RETURNING ${KEY_COLUMNS}`,
      [old.id, fresh.keyId, expiresAt],
    );
    await appendAudit(tx, {
      actor: input.caller.accountId,
      action: "api_key.rotate",
      subject: old.id,
      detail: { newKeyId: fresh.keyId, byKeyId: input.caller.apiKeyId, oldKeyExpiresAt: expiresAt },
    });
    const key = await getApiKey(tx, fresh.keyId);
    return { ok: true, key: key!, apiKey: fresh.apiKey, oldKey: updated.rows[0]! };
  });
}
