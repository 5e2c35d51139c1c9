/**
 * The credentials cache (docs/internal.md "Credentials cache"): the API writes it on every change,
 * the gateway authenticates from it and never from Postgres. One writer per field: the API owns
 * cred:{id} and credsecret:{hash}; the gateway owns credused:{id} and cap suspensions.
 */
import { keys } from "./keys.ts";
import { runScript } from "./lua/script.ts";
import { credDelete, credEventsDrain, credState, credWrite } from "./lua/scripts.gen.ts";
import type { RedisClient } from "./redis.ts";

export const CREDENTIAL_TIERS = ["mbl", "peer", "any"] as const;
export type CredentialTier = (typeof CREDENTIAL_TIERS)[number];

/** What the mirror needs of a credential; byte counts are exact up to 2^53 (Lua numbers are doubles). */
export interface CredentialCacheEntry {
  keyId: string;
  /** the `<account>` part of `psx_<account>-...` usernames */
  accountLabel: string;
  accountId: string;
  /** as Postgres has it; the cache stays disabled anyway while used >= cap */
  enabled: boolean;
  suspendedReason: string | null;
  capBytes: number;
  /** ms epoch; null = never */
  expiresAtMs: number | null;
  tier: CredentialTier;
  maxConnections: number;
  /** dedicated port: the only endpoint the gateway routes this key to (null = pool routing) */
  endpointId?: string | null;
  /** SHA-256 hex of the current pak_ secret */
  secretHash: string;
  /** SHA-256 hex of secrets a regenerate replaced; removed from the cache if they still name this key */
  retiredSecretHashes?: readonly string[];
}

/** The state the gateway acts on, read back from the cache. */
export interface CredentialLiveState {
  /** false when the API never mirrored the key (or deleted it) */
  cached: boolean;
  enabled: boolean;
  suspendedReason: string | null;
  usedBytes: number;
}

type Redis = Pick<RedisClient, "evalsha" | "eval">;

/** Writes (or rewrites) one credential's cache entry; returns the state the gateway now sees. */
export async function writeCredentialCache(
  redis: Redis,
  entry: CredentialCacheEntry,
): Promise<CredentialLiveState> {
  const redisKeys = [
    keys.credential(entry.keyId),
    keys.credentialUsed(entry.keyId),
    keys.credentialSecret(entry.secretHash),
    ...(entry.retiredSecretHashes ?? []).map(keys.credentialSecret),
  ];
  const reply = (await runScript(redis, credWrite, redisKeys, [
    entry.keyId,
    entry.accountLabel,
    entry.accountId,
    entry.enabled ? 1 : 0,
    entry.suspendedReason ?? "",
    entry.capBytes,
    entry.expiresAtMs ?? 0,
    entry.tier,
    entry.maxConnections,
    entry.endpointId ?? "",
  ])) as unknown[];
  return {
    cached: true,
    enabled: String(reply[0]) === "1",
    suspendedReason: reply[1] ? String(reply[1]) : null,
    usedBytes: Number(reply[2] ?? 0),
  };
}

/** How long credused outlives a deleted key, so the usage cron still records its last bytes. */
export const DELETED_USAGE_GRACE_S = 2 * 86_400;

/** Removes a credential from the cache: its secrets stop authenticating at once. */
export async function deleteCredentialCache(
  redis: Redis,
  keyId: string,
  secretHashes: string[],
): Promise<void> {
  await runScript(
    redis,
    credDelete,
    [keys.credential(keyId), keys.credentialUsed(keyId), ...secretHashes.map(keys.credentialSecret)],
    [keyId, DELETED_USAGE_GRACE_S],
  );
}

// One script call reads this many keys; bounds the size of a single Redis request.
const STATE_BATCH = 250;

/** Live state for many keys (missing keys read as not cached, 0 bytes used). */
export async function readCredentialState(
  redis: Redis,
  keyIds: readonly string[],
): Promise<Map<string, CredentialLiveState>> {
  const out = new Map<string, CredentialLiveState>();
  for (let start = 0; start < keyIds.length; start += STATE_BATCH) {
    const batch = keyIds.slice(start, start + STATE_BATCH);
    const redisKeys = batch.flatMap((id) => [keys.credential(id), keys.credentialUsed(id)]);
    const reply = (await runScript(redis, credState, redisKeys, [])) as unknown[];
    batch.forEach((id, i) => {
      const at = i * 4;
      out.set(id, {
        cached: String(reply[at]) === "1",
        enabled: String(reply[at + 1]) === "1",
        suspendedReason: reply[at + 2] ? String(reply[at + 2]) : null,
        usedBytes: Number(reply[at + 3] ?? 0),
      });
    });
  }
  return out;
}

/** Bytes used per key, live from credused:{keyId} (what the gateway has metered so far). */
export async function readUsedBytes(redis: Redis, keyIds: readonly string[]): Promise<Map<string, number>> {
  const state = await readCredentialState(redis, keyIds);
  return new Map([...state].map(([id, s]) => [id, s.usedBytes]));
}

/** Takes up to `max` keyIds the gateway suspended at their cap (events:cred_suspended). */
export async function drainSuspendedEvents(redis: Redis, max: number): Promise<string[]> {
  const reply = await runScript(redis, credEventsDrain, [keys.credentialSuspendedEvents()], [max]);
  return Array.isArray(reply) ? reply.map(String) : [];
}
