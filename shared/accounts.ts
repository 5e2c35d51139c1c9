import type { Queryable } from "./db/pool.ts";
import { hashSecret, newId, randomHex } from "./ids.ts";

/** Creates an account with one `psx_` API key; returns the key once (only its hash is stored). */
export async function createAccountWithKey(
  db: Queryable,
  input: { name: string; kind?: "customer" | "supplier" | "house" | "operator"; id?: string },
): Promise<{ accountId: string; apiKey: string; apiKeyId: string }> {
  const accountId = input.id ?? newId("acct", 8);
  const apiKey = `psx_${randomHex(24)}`;
  const apiKeyId = newId("key", 8);
  await db.query("INSERT INTO accounts (id, name, kind) VALUES ($1, $2, $3)", [
    accountId,
    input.name,
    input.kind ?? "customer",
  ]);
  await db.query("INSERT INTO api_keys (id, account_id, key_hash, hint) VALUES ($1, $2, $3, $4)", [
    apiKeyId,
    accountId,
    await hashSecret(apiKey),
    apiKey.slice(0, 8),
  ]);
  return { accountId, apiKey, apiKeyId };
}
