/**
 * Turns a verified payment into access (pool or dedicated port), exactly once: the payment row
 * (UNIQUE consumption key), the credential (minted through the reseller pipeline under the house
 * account) and the session are one transaction. A second request with the same payment finds the row; it gets the same credential
 * only with proof that it is the payer or the session's holder (docs/adr/0002-x402-request-binding.md).
 */
import type { Pool, Queryable } from "../../../shared/db/pool.ts";
import { withTransaction } from "../../../shared/db/pool.ts";
import { hashSecret, newId, randomHex, timingSafeEqual } from "../../../shared/ids.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import {
  type CredentialRow,
  mintCredential,
  regenerateCredential,
  syncCredentialMirror,
  topupCredential,
} from "./credentials.ts";
import { postTransaction } from "./ledger.ts";
import { consumptionKey, type VerifiedPayment } from "./x402-payment.ts";
import { type PoolOrder, poolOfTier, productKey } from "./x402-pricing.ts";

/** What an x402 session bought: pool access, or a dedicated port (one reserved modem). */
export type X402Product = "pool" | "proxy";

export type X402Session = {
  id: string;
  token_hash: string;
  credential_id: string;
  product: X402Product;
  network: "base" | "solana";
  payer: string;
  username: string;
  sealed_secret: string;
  expires_at: Date;
  created_at: Date;
};

/** Whether the gateway's Redis mirror took the change; "pending" is repaired on the next read. */
export type MirrorState = "synced" | "pending";

export interface PoolAccess {
  mirror?: MirrorState;
  session: X402Session;
  credential: CredentialRow;
  /** The pak_ password in clear: only ever in a response, never stored unsealed. */
  secret: string;
  sessionToken: string;
  consumptionKey: string;
}

export type RedeemResult =
  | ({ kind: "minted" | "reemitted" } & PoolAccess)
  | { kind: "used_for_other"; consumptionKey: string }
  | { kind: "needs_proof"; consumptionKey: string };

// The session token is the seal key's only input, so the database alone never yields a password.
async function sealKey(sessionToken: string) {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(`peerproxy x402 seal v1\n${sessionToken}`),
  );
  return crypto.subtle.importKey("raw", digest, "AES-GCM", false, ["encrypt", "decrypt"]);
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export async function sealSecret(sessionToken: string, secret: string): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv },
      await sealKey(sessionToken),
      new TextEncoder().encode(secret),
    ),
  );
  const out = new Uint8Array(iv.length + ct.length);
  out.set(iv);
  out.set(ct, iv.length);
  return toBase64(out);
}

export async function unsealSecret(sessionToken: string, sealed: string): Promise<string | null> {
  try {
    const bytes = Uint8Array.from(atob(sealed), (c) => c.charCodeAt(0));
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: bytes.slice(0, 12) },
      await sealKey(sessionToken),
      bytes.slice(12),
    );
    return new TextDecoder().decode(plain);
  } catch {
    return null;
  }
}

function newSessionToken(): string {
  return `x402s_${randomHex(32)}`;
}

/** The username as bought: the credential's base plus the sid/rot the agent asked for. */
export function boughtUsername(credential: CredentialRow, order: Pick<PoolOrder, "sid" | "rot">): string {
  let name = `psx_${credential.account_label}-${credential.pool}-${credential.country}`;
  if (order.sid) name += `-sid-${order.sid}`;
  if (order.rot) name += `-rot-${order.rot}`;
  return name;
}

async function loadSession(db: Queryable, where: string, value: string) {
  const { rows } = await db.query<X402Session & { c: CredentialRow }>(
    `SELECT s.*, row_to_json(c.*) AS c FROM x402_sessions s JOIN credentials c ON c.id = s.credential_id WHERE ${where}`,
    [value],
  );
  const row = rows[0];
  if (!row) return null;
  const { c, ...session } = row;
  // row_to_json yields ISO strings and numbers; the services only read ids, bigints as text and dates.
  const credential = {
    ...c,
    cap_bytes: String(c.cap_bytes),
    used_bytes_persisted: String(c.used_bytes_persisted),
  };
  return { session: session as X402Session, credential: credential as CredentialRow };
}

/** The session behind an `x402s_` token, with its credential; null when unknown. */
export async function sessionByToken(db: Queryable, token: string) {
  if (!/^x402s_[0-9a-f]{64}$/.test(token)) return null;
  return loadSession(db, "s.token_hash = $1", await hashSecret(token));
}

/** Re-emission to a proven payer who lacks the session token: new secret and new token (recovery). */
async function rotateAccess(
  deps: { db: Queryable; now(): Date },
  session: X402Session,
  houseAccountId: string,
  actor: string,
): Promise<{ credential: CredentialRow; secret: string; sessionToken: string }> {
  const regenerated = await regenerateCredential({
    deps,
    input: { accountId: houseAccountId, actor, keyId: session.credential_id },
  });
  if (!regenerated) throw new Error(`x402 session ${session.id} lost its credential`);
  const sessionToken = newSessionToken();
  await deps.db.query("UPDATE x402_sessions SET token_hash = $2, sealed_secret = $3 WHERE id = $1", [
    session.id,
    await hashSecret(sessionToken),
    await sealSecret(sessionToken, regenerated.secret),
  ]);
  return { ...regenerated, sessionToken };
}

/**
 * Records `payment` as consumed for `productKey`; false when its consumption key (or its EIP-3009
 * authorization) is already recorded: the UNIQUE constraints decide, not a prior read.
 */
async function recordPayment(
  tx: Queryable,
  input: {
    payment: VerifiedPayment;
    priceMicro: bigint;
    purpose: "purchase" | "topup";
    productKey: string;
    sessionId?: string;
    credentialId?: string;
    now: Date;
  },
): Promise<boolean> {
  const { payment } = input;
  const inserted = await tx.query(
    `INSERT INTO x402_payments (consumption_key, network, tx_ref, payer, amount_micro, price_micro, purpose,
                                product_key, authorization_key, session_id, credential_id, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT DO NOTHING RETURNING consumption_key`,
    [
      consumptionKey(payment),
      payment.network,
      payment.txRef,
      payment.payer,
      payment.amount.toString(),
      input.priceMicro.toString(),
      input.purpose,
      input.productKey,
      payment.authorizationKey,
      input.sessionId ?? null,
      input.credentialId ?? null,
      input.now.toISOString(),
    ],
  );
  if (inserted.rows.length === 0) return false;
  // The customer's USDC in the double-entry ledger (docs/adr/0013), in the same transaction.
  await postTransaction(tx, {
    kind: "sale",
    ref: consumptionKey(payment),
    postings: [
      { book: "treasury", accountId: null, amountMicro: payment.amount },
      { book: "sales_revenue", accountId: null, amountMicro: -payment.amount },
    ],
  });
  return true;
}

/** What a product's mint step made inside the purchase transaction, or why it could not (rolls back). */
export type MintOutcome =
  | { ok: true; credential: CredentialRow; secret: string; username: string }
  | { ok: false; reason: string; details?: Record<string, unknown> };

/** The product refused after the payment verified (e.g. no free modem): nothing was consumed. */
export type Refused = { kind: "refused"; reason: string; details?: Record<string, unknown> };

// Thrown inside the transaction so the payment row rolls back with everything else.
class MintRefused extends Error {
  readonly outcome: Extract<MintOutcome, { ok: false }>;
  constructor(outcome: Extract<MintOutcome, { ok: false }>) {
    super(outcome.reason);
    this.outcome = outcome;
  }
}

/**
 * Consumes `payment` for the product `productKey` once, and runs `mint` in the same transaction;
 * or finds what the payment already bought. `sessionToken` is the caller's X-Session-Token, if any:
 * with it (or a proven payer) a repeat gets the same access back. A mint that refuses rolls the
 * payment row back, so the same payment can be presented again later.
 */
export async function redeemPurchase(
  deps: { pool: Pool; redis: RedisClient; now(): Date },
  input: {
    houseAccountId: string;
    payment: VerifiedPayment;
    product: X402Product;
    productKey: string;
    priceMicro: bigint;
    sessionToken: string | undefined;
    /** The session token a new mint gets (an EIP-3009 claim's owner token); fresh when absent. */
    mintToken?: string;
  },
  mint: (tx: Queryable, ctx: { consumptionKey: string; now: Date }) => Promise<MintOutcome>,
): Promise<RedeemResult | Refused> {
  const { payment } = input;
  const key = consumptionKey(payment);
  const product = input.productKey;
  const now = deps.now();
  let result: RedeemResult;
  try {
    result = await withTransaction(deps.pool, async (tx): Promise<RedeemResult> => {
      // The constraint decides: a racing request blocks here until the winner commits, then sees its row.
      const recorded = await recordPayment(tx, {
        payment,
        priceMicro: input.priceMicro,
        purpose: "purchase",
        productKey: product,
        now,
      });
      if (!recorded) return existing(tx, key, payment, product, input);

      const minted = await mint(tx, { consumptionKey: key, now });
      if (!minted.ok) throw new MintRefused(minted);
      const sessionToken = input.mintToken ?? newSessionToken();
      const session: X402Session = {
        id: newId("x402ses"),
        token_hash: await hashSecret(sessionToken),
        credential_id: minted.credential.id,
        product: input.product,
        network: payment.network,
        payer: payment.payer,
        username: minted.username,
        sealed_secret: await sealSecret(sessionToken, minted.secret),
        expires_at: minted.credential.expires_at ?? now,
        created_at: now,
      };
      await tx.query(
        `INSERT INTO x402_sessions (id, token_hash, sealed_secret, credential_id, product, network, payer, username,
                                    expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
        [
          session.id,
          session.token_hash,
          session.sealed_secret,
          session.credential_id,
          session.product,
          session.network,
          session.payer,
          session.username,
          new Date(session.expires_at).toISOString(),
          now.toISOString(),
        ],
      );
      await tx.query(
        "UPDATE x402_payments SET session_id = $2, credential_id = $3 WHERE consumption_key = $1",
        [key, session.id, session.credential_id],
      );
      return {
        kind: "minted",
        session,
        credential: minted.credential,
        secret: minted.secret,
        sessionToken,
        consumptionKey: key,
      };
    });
  } catch (err) {
    if (err instanceof MintRefused)
      return {
        kind: "refused",
        reason: err.outcome.reason,
        ...(err.outcome.details ? { details: err.outcome.details } : {}),
      };
    throw err;
  }
  if (result.kind === "minted" || result.kind === "reemitted")
    return { ...result, mirror: await syncMirrorAfterCommit(deps, result.credential.id) };
  return result;

  async function existing(
    tx: Queryable,
    key: string,
    payment: VerifiedPayment,
    product: string,
    input: { houseAccountId: string; sessionToken: string | undefined },
  ): Promise<RedeemResult> {
    const { rows } = await tx.query<{
      consumption_key: string;
      product_key: string;
      session_id: string | null;
    }>(
      `SELECT consumption_key, product_key, session_id FROM x402_payments
        WHERE consumption_key = $1 OR ($2::text IS NOT NULL AND authorization_key = $2) FOR UPDATE`,
      [key, payment.authorizationKey],
    );
    const row = rows[0];
    if (!row || row.product_key !== product || !row.session_id)
      return { kind: "used_for_other", consumptionKey: row?.consumption_key ?? key };
    const found = await loadSession(tx, "s.id = $1", row.session_id);
    if (!found) return { kind: "used_for_other", consumptionKey: row.consumption_key };
    if (
      input.sessionToken &&
      timingSafeEqual(await hashSecret(input.sessionToken), found.session.token_hash)
    ) {
      const secret = await unsealSecret(input.sessionToken, found.session.sealed_secret);
      if (secret)
        return {
          kind: "reemitted",
          ...found,
          secret,
          sessionToken: input.sessionToken,
          consumptionKey: row.consumption_key,
        };
    }
    if (!payment.payerProven) return { kind: "needs_proof", consumptionKey: row.consumption_key };
    const rotated = await rotateAccess(
      { db: tx, now: deps.now },
      found.session,
      input.houseAccountId,
      `x402:${row.consumption_key}:recover`,
    );
    return { kind: "reemitted", session: found.session, ...rotated, consumptionKey: row.consumption_key };
  }
}

/**
 * Runs after the payment committed: the money moved and the access exists in Postgres, so a Redis
 * failure here must not fail the answer. The mirror is rebuilt on the session's next read
 * (routes/x402/guards.ts requireSession) or by the next write; until then the gateway refuses the key.
 */
export async function syncMirrorAfterCommit(
  deps: { pool: Pool; redis: RedisClient },
  credentialId: string,
): Promise<MirrorState> {
  try {
    await syncCredentialMirror({ db: deps.pool, redis: deps.redis }, credentialId);
    return "synced";
  } catch (err) {
    console.error(
      JSON.stringify({
        level: "error",
        msg: "x402: credential mirror not written after commit; repaired on next read",
        credentialId,
        error: String(err),
      }),
    );
    return "pending";
  }
}

/** Pool access: a capped key of the house account for the order's tier, country and duration. */
export async function redeemPoolPurchase(
  deps: { pool: Pool; redis: RedisClient; now(): Date },
  input: {
    houseAccountId: string;
    payment: VerifiedPayment;
    order: PoolOrder;
    priceMicro: bigint;
    sessionToken: string | undefined;
    mintToken?: string;
  },
): Promise<RedeemResult> {
  const { payment, order } = input;
  const result = await redeemPurchase(
    deps,
    { ...input, product: "pool", productKey: productKey(order) },
    async (tx, { consumptionKey: key, now }) => {
      const minted = await mintCredential({
        deps: { db: tx, now: deps.now },
        input: {
          accountId: input.houseAccountId,
          actor: `x402:${key}`,
          tier: order.tier.name === "peer" ? "peer" : "mbl",
          pool: poolOfTier(order.tier.name),
          country: order.country,
          capBytes: Number(order.quote.trafficBytes),
          expiresAt: new Date(now.getTime() + order.quote.durationDays * 86_400_000),
          name: `x402 ${payment.network} ${payment.txRef.slice(0, 18)}`,
        },
      });
      if (!minted) throw new Error(`x402 house account ${input.houseAccountId} does not exist`);
      return { ok: true, ...minted, username: boughtUsername(minted.credential, order) };
    },
  );
  if (result.kind === "refused") throw new Error(`pool purchase refused: ${result.reason}`);
  return result;
}

export type TopupResult =
  | { kind: "applied" | "already_applied"; credential: CredentialRow; mirror?: MirrorState }
  | { kind: "used_for_other"; consumptionKey: string };

/** Adds the paid bytes to the session's credential once per payment; re-enables a key suspended at its cap. */
export async function redeemTopup(
  deps: { pool: Pool; redis: RedisClient; now(): Date },
  input: {
    houseAccountId: string;
    session: X402Session;
    payment: VerifiedPayment;
    addBytes: bigint;
    priceMicro: bigint;
  },
): Promise<TopupResult> {
  const { payment, session } = input;
  const key = consumptionKey(payment);
  const product = `topup:${session.id}:${input.addBytes}`;
  const result = await withTransaction(deps.pool, async (tx): Promise<TopupResult> => {
    const recorded = await recordPayment(tx, {
      payment,
      priceMicro: input.priceMicro,
      purpose: "topup",
      productKey: product,
      sessionId: session.id,
      credentialId: session.credential_id,
      now: deps.now(),
    });
    if (!recorded) {
      const { rows } = await tx.query<{ product_key: string; consumption_key: string }>(
        `SELECT product_key, consumption_key FROM x402_payments
          WHERE consumption_key = $1 OR ($2::text IS NOT NULL AND authorization_key = $2)`,
        [key, payment.authorizationKey],
      );
      if (rows[0]?.product_key !== product)
        return { kind: "used_for_other", consumptionKey: rows[0]?.consumption_key ?? key };
      const { rows: creds } = await tx.query<CredentialRow>("SELECT * FROM credentials WHERE id = $1", [
        session.credential_id,
      ]);
      return { kind: "already_applied", credential: creds[0]! };
    }
    const credential = await topupCredential({
      deps: { db: tx, now: deps.now },
      input: {
        accountId: input.houseAccountId,
        actor: `x402:${key}`,
        keyId: session.credential_id,
        addBytes: Number(input.addBytes),
      },
    });
    if (!credential) throw new Error(`x402 session ${session.id} lost its credential`);
    return { kind: "applied", credential };
  });
  if (result.kind !== "used_for_other")
    return { ...result, mirror: await syncMirrorAfterCommit(deps, result.credential.id) };
  return result;
}

/** New secret, same username; the new one is sealed under the caller's (unchanged) session token. */
export async function regenerateSessionSecret(
  deps: { pool: Pool; redis: RedisClient; now(): Date },
  input: { houseAccountId: string; session: X402Session; sessionToken: string },
): Promise<{ credential: CredentialRow; secret: string }> {
  const out = await withTransaction(deps.pool, async (tx) => {
    const regenerated = await regenerateCredential({
      deps: { db: tx, now: deps.now },
      input: {
        accountId: input.houseAccountId,
        actor: `x402:${input.session.id}`,
        keyId: input.session.credential_id,
      },
    });
    if (!regenerated) throw new Error(`x402 session ${input.session.id} lost its credential`);
    await tx.query("UPDATE x402_sessions SET sealed_secret = $2 WHERE id = $1", [
      input.session.id,
      await sealSecret(input.sessionToken, regenerated.secret),
    ]);
    return regenerated;
  });
  await syncMirrorAfterCommit(deps, out.credential.id);
  return out;
}
