import type { ApiKeyScope } from "../../../shared/accounts.ts";
import type { Queryable } from "../../../shared/db/pool.ts";
import { hashSecret } from "../../../shared/ids.ts";

/** Who an `X-API-Key: psx_...` header belongs to, and what that key may do. */
export interface ApiKeyAccount {
  accountId: string;
  accountKind: string;
  apiKeyId: string;
  scopes: ApiKeyScope[];
}

// psx_ secrets are random; anything outside this shape cannot be a key and skips the database.
const API_KEY = /^psx_[A-Za-z0-9_]{8,200}$/;

/**
 * The account behind a `psx_` API key, or null when the key is missing, malformed, unknown,
 * revoked, or past the grace period a rotation gave it.
 */
export async function authenticateApiKey(
  deps: { db: Queryable; now?: () => Date },
  header: string | null | undefined,
): Promise<ApiKeyAccount | null> {
  const secret = header?.trim();
  if (!secret || !API_KEY.test(secret)) return null;
  const now = deps.now?.() ?? new Date();
  const { rows } = await deps.db.query<{
    api_key_id: string;
    account_id: string;
    kind: string;
    scopes: ApiKeyScope[];
  }>(
    `SELECT k.id AS api_key_id, a.id AS account_id, a.kind, k.scopes
       FROM api_keys k JOIN accounts a ON a.id = k.account_id
      WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)`,
    [await hashSecret(secret), now.toISOString()],
  );
  const row = rows[0];
  return row
    ? { accountId: row.account_id, accountKind: row.kind, apiKeyId: row.api_key_id, scopes: row.scopes }
    : null;
}

/** A human operator: an `operate` key of an operator account (the only caller who approves or releases). */
export const isHumanOperator = (a: ApiKeyAccount) =>
  a.accountKind === "operator" && a.scopes.includes("operate");

/** An AI operator: an `ops-agent` key of an ops account. */
export const isOpsAgent = (a: ApiKeyAccount) => a.accountKind === "ops" && a.scopes.includes("ops-agent");

/** True when the key carries `scope`. */
export function hasScope(account: ApiKeyAccount, scope: ApiKeyScope): boolean {
  return account.scopes.includes(scope);
}
