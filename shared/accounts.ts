import type { Queryable } from "./db/pool.ts";
import { hashSecret, newId, randomHex } from "./ids.ts";

/** What an account is (who it is for); what a key may do is its scopes. */
export const ACCOUNT_KINDS = [
  "customer",
  "supplier",
  "reseller",
  "farmer",
  "operator",
  "ops",
  "house",
] as const;
export type AccountKind = (typeof ACCOUNT_KINDS)[number];

/**
 * What an API key may do (ADR 0009): `supply` registers devices and reads earnings, `resell` runs
 * the pool-keys API, `operate` is a human operator, `ops-agent` an AI operator (reads, capped
 * reversible actions, proposals). Every route names the one it needs.
 */
export const API_KEY_SCOPES = ["supply", "resell", "operate", "ops-agent"] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

/** The scopes a seeded key of each kind gets when none are given (seeding and tests only). */
export const DEFAULT_SCOPES: Readonly<Record<AccountKind, readonly ApiKeyScope[]>> = {
  customer: ["resell"],
  reseller: ["resell"],
  supplier: ["supply"],
  farmer: ["supply"],
  operator: ["operate"],
  ops: ["ops-agent"],
  house: [],
};

/** A new `psx_` secret, its id, and what is stored (the hash and a hint), never the secret itself. */
export async function newApiKeySecret(): Promise<{
  apiKey: string;
  keyId: string;
  hash: string;
  hint: string;
}> {
  const apiKey = `psx_${randomHex(24)}`;
  return { apiKey, keyId: newId("key", 8), hash: await hashSecret(apiKey), hint: apiKey.slice(0, 8) };
}

/** Inserts one API key for an account; returns the secret once (only its hash is stored). */
export async function insertApiKey(
  db: Queryable,
  input: { accountId: string; scopes: readonly ApiKeyScope[]; createdBy?: string },
): Promise<{ apiKey: string; apiKeyId: string }> {
  const k = await newApiKeySecret();
  await db.query(
    "INSERT INTO api_keys (id, account_id, key_hash, hint, scopes, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
    [k.keyId, input.accountId, k.hash, k.hint, [...new Set(input.scopes)], input.createdBy ?? null],
  );
  return { apiKey: k.apiKey, apiKeyId: k.keyId };
}

/** Creates an account with one `psx_` API key; returns the key once (only its hash is stored). */
export async function createAccountWithKey(
  db: Queryable,
  input: { name: string; kind?: AccountKind; id?: string; scopes?: readonly ApiKeyScope[] },
): Promise<{ accountId: string; apiKey: string; apiKeyId: string }> {
  const accountId = input.id ?? newId("acct", 8);
  const kind = input.kind ?? "customer";
  await db.query("INSERT INTO accounts (id, name, kind) VALUES ($1, $2, $3)", [accountId, input.name, kind]);
  const key = await insertApiKey(db, { accountId, scopes: input.scopes ?? DEFAULT_SCOPES[kind] });
  return { accountId, ...key };
}
