import { type Pool, type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import { sha256Hex } from "../../../shared/ids.ts";

/** How long a stored response answers replays of the same Idempotency-Key. */
export const IDEMPOTENCY_WINDOW_HOURS = 24;

export interface IdempotencyRequest {
  accountId: string;
  /** the client's Idempotency-Key header */
  key: string;
  /** the caller's own API key secret: with `key`, it derives the sealing key (neither is stored) */
  apiKeySecret: string;
  method: string;
  path: string;
  /** the validated body; zod output keeps schema key order, so equal requests hash equally */
  body: unknown;
}

/** What a write produced: replayed byte for byte for the same key and body. */
export interface WriteOutcome {
  status: number;
  body: unknown;
  /** the credential the write changed, so a replay can re-sync its Redis mirror */
  subject: string | null;
}

export type IdempotentResult =
  | { kind: "fresh"; outcome: WriteOutcome }
  | { kind: "replay"; outcome: WriteOutcome }
  | { kind: "mismatch"; reason: string };

/**
 * Runs `mutate` in one transaction together with the idempotency record, so a write and its stored
 * response commit or roll back together. Without a request (no header) it just runs the transaction.
 * Two concurrent requests with one key serialise on the record's primary key: the second waits for
 * the first to commit, then replays its response.
 */
export async function runIdempotent(
  pool: Pool,
  request: IdempotencyRequest | null,
  mutate: (tx: Queryable) => Promise<WriteOutcome>,
): Promise<IdempotentResult> {
  if (!request) return { kind: "fresh", outcome: await withTransaction(pool, mutate) };
  const keyHash = await sha256Hex(`idem\n${request.key}`);
  const requestHash = await sha256Hex(`${request.method} ${request.path}\n${JSON.stringify(request.body)}`);
  const sealKey = await deriveSealKey(request.apiKeySecret, request.key);

  return withTransaction(pool, async (tx): Promise<IdempotentResult> => {
    // Claims the key, or takes over a record older than the window; otherwise returns no row.
    const claimed = await tx.query(
      `INSERT INTO idempotency_keys (account_id, key_hash, request_hash) VALUES ($1, $2, $3)
       ON CONFLICT (account_id, key_hash) DO UPDATE
         SET request_hash = EXCLUDED.request_hash, subject = NULL, status = NULL, response = NULL,
             created_at = now()
         WHERE idempotency_keys.created_at < now() - make_interval(hours => $4)
       RETURNING key_hash`,
      [request.accountId, keyHash, requestHash, IDEMPOTENCY_WINDOW_HOURS],
    );
    if (claimed.rows.length === 0) {
      const { rows } = await tx.query<{
        request_hash: string;
        status: number;
        response: string;
        subject: string | null;
      }>(
        "SELECT request_hash, status, response, subject FROM idempotency_keys WHERE account_id = $1 AND key_hash = $2",
        [request.accountId, keyHash],
      );
      const stored = rows[0];
      if (!stored || stored.request_hash !== requestHash) {
        return { kind: "mismatch", reason: "this Idempotency-Key was used with a different request" };
      }
      const body = await unseal(sealKey, stored.response);
      if (body === undefined) {
        return { kind: "mismatch", reason: "this Idempotency-Key was used with a different API key" };
      }
      return { kind: "replay", outcome: { status: stored.status, body, subject: stored.subject } };
    }
    const outcome = await mutate(tx);
    await tx.query(
      `UPDATE idempotency_keys SET status = $3, response = $4, subject = $5
        WHERE account_id = $1 AND key_hash = $2`,
      [request.accountId, keyHash, outcome.status, await seal(sealKey, outcome.body), outcome.subject],
    );
    return { kind: "fresh", outcome };
  });
}

// A stored create/regenerate response carries the new pak_ secret; sealing it with a key only the
// caller can re-derive keeps "secrets are stored hashed" true for this table too.
async function deriveSealKey(apiKeySecret: string, idempotencyKey: string): Promise<CryptoKey> {
  const material = new TextEncoder().encode(`peerproxy-idempotency-v1\n${apiKeySecret}\n${idempotencyKey}`);
  const raw = await crypto.subtle.digest("SHA-256", material);
  return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

async function seal(key: CryptoKey, body: unknown): Promise<string> {
  const iv = new Uint8Array(12);
  crypto.getRandomValues(iv);
  const plain = new TextEncoder().encode(JSON.stringify(body));
  const cipher = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, plain));
  const out = new Uint8Array(iv.length + cipher.length);
  out.set(iv);
  out.set(cipher, iv.length);
  return toBase64(out);
}

/** The stored body, or undefined when this key cannot open it (another API key sealed it). */
async function unseal(key: CryptoKey, sealed: string): Promise<unknown> {
  try {
    const bytes = fromBase64(sealed);
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: bytes.slice(0, 12) },
      key,
      bytes.slice(12),
    );
    return JSON.parse(new TextDecoder().decode(plain));
  } catch {
    return undefined;
  }
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
