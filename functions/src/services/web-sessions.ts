/**
 * Sign-in sessions of the HTML pages (docs/adr/0020): an API key is exchanged for a random token
 * that only the browser's cookie holds; Postgres keeps its SHA-256 (migration 0019). Every read
 * joins the key, so a revoked key, or a rotated one past its grace period, ends its sessions.
 */
import type { ApiKeyScope } from "../../../shared/accounts.ts";
import type { Queryable } from "../../../shared/db/pool.ts";
import { hashSecret, randomHex, sha256Hex, timingSafeEqual } from "../../../shared/ids.ts";
import type { ApiKeyAccount } from "./auth.ts";

/** How long a sign-in lasts; signing in again starts a new session. */
export const SESSION_TTL_MS = 12 * 3600_000;

const TOKEN = /^wss_[0-9a-f]{64}$/;

/** Starts a session for the account behind a key just authenticated; answers the cookie's token. */
export async function createWebSession(
  db: Queryable,
  input: { account: ApiKeyAccount; now: Date },
): Promise<{ token: string; expiresAt: Date }> {
  const token = `wss_${randomHex(32)}`;
  const expiresAt = new Date(input.now.getTime() + SESSION_TTL_MS);
  // Expired rows go as new ones come: the table holds live sessions plus at most a day of litter.
  await db.query("DELETE FROM web_sessions WHERE expires_at < $1::timestamptz - interval '1 day'", [
    input.now.toISOString(),
  ]);
  await db.query(
    "INSERT INTO web_sessions (token_hash, api_key_id, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    [
      await hashSecret(token),
      input.account.apiKeyId,
      input.account.accountId,
      input.now.toISOString(),
      expiresAt.toISOString(),
    ],
  );
  return { token, expiresAt };
}

/**
 * The account and key behind a session token, or null when the token is malformed, unknown,
 * expired, or its key is revoked or past a rotation's grace period.
 */
export async function readWebSession(
  db: Queryable,
  token: string | undefined,
  now: Date,
): Promise<ApiKeyAccount | null> {
  if (!token || !TOKEN.test(token)) return null;
  const { rows } = await db.query<{
    api_key_id: string;
    account_id: string;
    kind: string;
    scopes: ApiKeyScope[];
  }>(
    `SELECT k.id AS api_key_id, a.id AS account_id, a.kind, k.scopes
       FROM web_sessions s
       JOIN api_keys k ON k.id = s.api_key_id
       JOIN accounts a ON a.id = k.account_id
      WHERE s.token_hash = $1 AND s.expires_at > $2
        AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)`,
    [await hashSecret(token), now.toISOString()],
  );
  const r = rows[0];
  return r
    ? { accountId: r.account_id, accountKind: r.kind, apiKeyId: r.api_key_id, scopes: r.scopes }
    : null;
}

/** Ends a session (sign-out); unknown tokens are a no-op. */
export async function deleteWebSession(db: Queryable, token: string | undefined): Promise<void> {
  if (!token || !TOKEN.test(token)) return;
  await db.query("DELETE FROM web_sessions WHERE token_hash = $1", [await hashSecret(token)]);
}

/**
 * The session's CSRF token: derived from the session token, so nothing more is stored, and
 * unknowable to a page that cannot read the HttpOnly cookie. Differs from the stored hash.
 */
export async function csrfTokenFor(sessionToken: string): Promise<string> {
  return sha256Hex(`csrf:${sessionToken}`);
}

/** Whether a submitted CSRF token is the session's (constant time). */
export async function csrfTokenMatches(sessionToken: string, submitted: unknown): Promise<boolean> {
  if (typeof submitted !== "string" || !/^[0-9a-f]{64}$/.test(submitted)) return false;
  return timingSafeEqual(await csrfTokenFor(sessionToken), submitted);
}
