import { type AccountKind, type ApiKeyScope, createAccountWithKey } from "../../../shared/accounts.ts";
import type { Queryable } from "../../../shared/db/pool.ts";
import { keys } from "../../../shared/keys.ts";
import type { RedisClient } from "../../../shared/redis.ts";

export interface Tenant {
  accountId: string;
  apiKey: string;
  apiKeyId: string;
  /** removes the account, its keys, credentials (and their Redis mirror) and idempotency records */
  cleanup(): Promise<void>;
}

/**
 * A fresh account with one `psx_` API key, straight in Postgres; each test makes its own. The key
 * gets the scopes its kind needs (shared/accounts.ts DEFAULT_SCOPES) unless `scopes` says otherwise.
 */
export async function createTenant(
  db: Queryable,
  redis: Pick<RedisClient, "del">,
  opts: { name?: string; kind?: AccountKind; scopes?: ApiKeyScope[] } = {},
): Promise<Tenant> {
  const t = await createAccountWithKey(db, {
    name: opts.name ?? `t-${crypto.randomUUID().slice(0, 12)}`,
    kind: opts.kind ?? "customer",
    ...(opts.scopes ? { scopes: opts.scopes } : {}),
  });
  return {
    ...t,
    async cleanup() {
      const { rows } = await db.query<{ id: string; secret_hash: string; retired_secret_hashes: string[] }>(
        "SELECT id, secret_hash, retired_secret_hashes FROM credentials WHERE account_id = $1",
        [t.accountId],
      );
      const redisKeys = rows.flatMap((r) => [
        keys.credential(r.id),
        keys.credentialUsed(r.id),
        keys.credentialSecret(r.secret_hash),
        ...r.retired_secret_hashes.map(keys.credentialSecret),
      ]);
      if (redisKeys.length) await redis.del(...redisKeys);
      // audit_log is append-only by design: its rows stay (they carry no foreign keys).
      await db.query("DELETE FROM idempotency_keys WHERE account_id = $1", [t.accountId]);
      await db.query("DELETE FROM credentials WHERE account_id = $1", [t.accountId]);
      // Devices outlive their key (the earnings ledger points at them), so unlink before deleting keys.
      await db.query("UPDATE devices SET api_key_id = NULL WHERE account_id = $1", [t.accountId]);
      await db.query("DELETE FROM api_keys WHERE account_id = $1", [t.accountId]);
      // An account whose devices earned stays: the append-only ledger points at them.
      await db.query(
        "DELETE FROM accounts a WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.account_id = a.id)",
        [t.accountId],
      );
    },
  };
}
