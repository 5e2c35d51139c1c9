/**
 * The paid flow of every x402 product, in one place (docs/adr/0008-x402-paid-flow-and-replay.md):
 * per-IP rate limit -> proof policy (X402_BARE_HASH) -> verification (a transaction proof on-chain,
 * or an EIP-3009 authorization claimed and settled once) -> redeem guard -> redeem -> the answer
 * when the mirror write fails. Purchases and topups both come through here, so no route can skip a
 * step. Expected failures are results (`PaidRefusal`); routes only map them to answers.
 */
import type { Pool } from "../../../shared/db/pool.ts";
import { randomHex } from "../../../shared/ids.ts";
import { keys } from "../../../shared/keys.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import type { Config } from "../config.ts";
import { hitRateLimit } from "./rate-limit.ts";
import type { X402Rails } from "./x402-config.ts";
import {
  consumptionKey,
  type PaymentProof,
  type ProofParse,
  type VerifiedPayment,
  verifyPaymentProof,
} from "./x402-payment.ts";
import {
  type PoolAccess,
  type RedeemResult,
  type Refused,
  redeemTopup,
  type TopupResult,
  type X402Product,
  type X402Session,
} from "./x402-purchase.ts";
import { claimOf, claimOfTransaction, settleAuthorization } from "./x402-settlement.ts";

export interface PaidContext {
  deps: { db: Pool; redis: RedisClient; now(): Date; config: Config };
  rails: X402Rails;
  clientIp: string;
  /** X-Session-Token, if sent: resumes a pending EIP-3009 settlement, re-emits an existing purchase. */
  sessionToken: string | undefined;
  requestId: string;
}

/** Why a paid request got no access; the routes map each kind to one answer. */
export type PaidRefusal =
  | { kind: "rate_limited"; retryAfterSeconds: number }
  /** The Payment-Signature does not parse, or is a form this deployment refuses. */
  | { kind: "bad_proof"; message: string }
  /** Checked and final: this payment does not pay for this. */
  | { kind: "payment_invalid"; reason: string; message: string; details: Record<string, unknown> }
  /** Not final yet; nothing consumed. `details.sessionToken` resumes an EIP-3009 settlement. */
  | { kind: "payment_pending"; reason: string; message: string; details: Record<string, unknown> }
  /**
   * The payment bought (or is being settled for) something: another product (`other_product`), the
   * same one and re-emission needs proof (`needs_proof`), or a claimed EIP-3009 authorization (`claimed`).
   */
  | { kind: "payment_used"; why: "other_product" | "needs_proof" | "claimed"; consumptionKey: string }
  /** The product could not be served (e.g. no free modem); the payment was not consumed. */
  | {
      kind: "product_refused";
      reason: string;
      consumptionKey: string | null;
      resumeToken: string | null;
    };

export type Accessed = Extract<RedeemResult, { kind: "minted" | "reemitted" }>;

export type PurchaseOutcome =
  | { ok: true; payment: VerifiedPayment; access: Accessed & Pick<PoolAccess, "mirror"> }
  | { ok: false; refusal: PaidRefusal };

/** What a product sells for one order: its key, price and resource, and how it redeems a payment. */
export interface PaidOrder {
  productKey: string;
  priceMicro: bigint;
  resource: string;
  /** Checked before an EIP-3009 authorization is claimed and settled: no money moves unless it passes. */
  canServe?(): Promise<PaidRefusal | null>;
  redeem(input: {
    payment: VerifiedPayment;
    sessionToken: string | undefined;
    mintToken: string | undefined;
  }): Promise<RedeemResult | Refused>;
}

const refuse = (refusal: PaidRefusal) => ({ ok: false as const, refusal });

/** A purchase of `product`: access minted once per payment, or re-emitted to its proven owner. */
export async function purchase(input: {
  ctx: PaidContext;
  product: X402Product;
  proof: ProofParse;
  order: PaidOrder;
}): Promise<PurchaseOutcome> {
  const { ctx, order } = input;
  // The product key is what a payment is consumed for: it must name the product being sold.
  if (!order.productKey.startsWith(`${input.product}:`))
    throw new Error(`x402 order key ${order.productKey} does not belong to product ${input.product}`);
  const accepted = await acceptProof(ctx, input.proof);
  if (!accepted.ok) return accepted;
  const paid = await acceptPayment(ctx, accepted.proof, {
    productKey: order.productKey,
    price: order.priceMicro,
    resource: order.resource,
    ownerToken: newSessionToken(),
    canServe: order.canServe,
  });
  if (!paid.ok) return paid;
  const { payment, ownerToken } = paid;
  const result = await withRedeemGuard(ctx, payment, () =>
    order.redeem({ payment, sessionToken: ctx.sessionToken, mintToken: ownerToken }),
  );
  if ("refusal" in result) return result;
  if (result.kind === "refused")
    return refuse({
      kind: "product_refused",
      reason: result.reason,
      consumptionKey: consumptionKey(payment),
      resumeToken: ownerToken ?? null,
    });
  if (result.kind === "used_for_other")
    return refuse({ kind: "payment_used", why: "other_product", consumptionKey: result.consumptionKey });
  if (result.kind === "needs_proof")
    return refuse({ kind: "payment_used", why: "needs_proof", consumptionKey: result.consumptionKey });
  return { ok: true, payment, access: result };
}

export type TopupOutcome =
  | {
      ok: true;
      payment: VerifiedPayment;
      result: Extract<TopupResult, { kind: "applied" | "already_applied" }>;
    }
  | { ok: false; refusal: PaidRefusal };

/** More bytes for a session's credential, through exactly the purchase's policy, limits and guards. */
export async function topup(input: {
  ctx: PaidContext;
  session: X402Session;
  sessionToken: string;
  proof: ProofParse;
  order: { addBytes: bigint; priceMicro: bigint; resource: string };
}): Promise<TopupOutcome> {
  const { ctx, session, order } = input;
  const perSession = await hitRateLimit(ctx.deps.redis, "x402_topup", session.id, 5, 60_000);
  if (!perSession.allowed)
    return refuse({ kind: "rate_limited", retryAfterSeconds: perSession.retryAfterSeconds });
  const accepted = await acceptProof(ctx, input.proof);
  if (!accepted.ok) return accepted;
  const paid = await acceptPayment(ctx, accepted.proof, {
    productKey: `topup:${session.id}:${order.addBytes}`,
    price: order.priceMicro,
    resource: order.resource,
    // The session's own token owns a topup's claim: it is what resumes a pending settlement.
    ownerToken: input.sessionToken,
  });
  if (!paid.ok) return paid;
  const { payment } = paid;
  const { deps, rails } = ctx;
  const result = await withRedeemGuard(ctx, payment, () =>
    redeemTopup(
      { pool: deps.db, redis: deps.redis, now: deps.now },
      {
        houseAccountId: rails.houseAccountId,
        session,
        payment,
        addBytes: order.addBytes,
        priceMicro: order.priceMicro,
      },
    ),
  );
  if ("refusal" in result) return result;
  if (result.kind === "used_for_other")
    return refuse({ kind: "payment_used", why: "other_product", consumptionKey: result.consumptionKey });
  return { ok: true, payment, result };
}

function newSessionToken(): string {
  return `x402s_${randomHex(32)}`;
}

/** Rate limit per client IP, then the proof must parse and be a form this deployment accepts. */
async function acceptProof(
  ctx: PaidContext,
  parse: ProofParse,
): Promise<{ ok: true; proof: PaymentProof } | { ok: false; refusal: PaidRefusal }> {
  const { config, redis } = ctx.deps;
  const limit = await hitRateLimit(
    redis,
    "x402_purchase",
    ctx.clientIp,
    config.X402_RATE_LIMIT_PURCHASE_PER_MINUTE,
    60_000,
  );
  if (!limit.allowed) return refuse({ kind: "rate_limited", retryAfterSeconds: limit.retryAfterSeconds });
  if (!parse.ok) return refuse({ kind: "bad_proof", message: parse.message });
  if (parse.proof.kind === "bare" && config.X402_BARE_HASH === "off")
    return refuse({
      kind: "bad_proof",
      message:
        "bare transaction references are not accepted here; send the x402 v2 payment header with a binding signed by the paying wallet, or an EIP-3009 authorization",
    });
  return { ok: true, proof: parse.proof };
}

/**
 * The payment the proof shows for `price` of `resource`: a transaction verified on-chain, or an
 * EIP-3009 authorization this request owns (claimed now, or resumed with its token) and settled.
 */
async function acceptPayment(
  ctx: PaidContext,
  proof: PaymentProof,
  terms: {
    productKey: string;
    price: bigint;
    resource: string;
    ownerToken: string;
    canServe?: PaidOrder["canServe"];
  },
): Promise<
  { ok: true; payment: VerifiedPayment; ownerToken?: string } | { ok: false; refusal: PaidRefusal }
> {
  const { deps, rails } = ctx;
  const nowSeconds = Math.floor(deps.now().getTime() / 1000);
  if (proof.kind === "eip3009") {
    const base = rails.base;
    if (!base) return refuse(invalid("wrong_network", "Base payments are not accepted here", {}));
    if (!base.gasWallet)
      return refuse(
        invalid(
          "settlement_unavailable",
          "EIP-3009 settlement is not configured here; pay with a transaction and a bound payment header instead",
          {},
        ),
      );
    if (terms.canServe && !(await claimOf(deps.db, proof.authorizationKey))) {
      const refusal = await terms.canServe();
      if (refusal) return refuse(refusal);
    }
    const settled = await settleAuthorization({
      db: deps.db,
      base: { ...base, gasWallet: base.gasWallet },
      payment: proof.payment,
      authorizationKey: proof.authorizationKey,
      productKey: terms.productKey,
      resource: terms.resource,
      price: terms.price,
      nowSeconds,
      callerToken: ctx.sessionToken,
      ownerToken: terms.ownerToken,
    });
    switch (settled.kind) {
      case "settled":
        return { ok: true, payment: settled.payment, ownerToken: settled.token };
      case "pending":
        return refuse({
          kind: "payment_pending",
          reason: settled.reason,
          message: `${settled.message}; nothing was consumed: repeat the request with the same payment header and X-Session-Token: <details.sessionToken> (only that token can complete this settlement)`,
          details: {
            retryable: true,
            sessionToken: settled.token,
            ...(settled.txHash ? { txRef: settled.txHash } : {}),
          },
        });
      case "taken":
        return refuse({
          kind: "payment_used",
          why: settled.sameProduct ? "claimed" : "other_product",
          consumptionKey: settled.authorizationKey,
        });
      case "refused":
        return refuse(
          settled.retryable
            ? {
                kind: "payment_pending",
                reason: settled.reason,
                message: settled.message,
                details: { retryable: true },
              }
            : invalid(settled.reason, settled.message, {}),
        );
    }
  }

  const txRef = proof.kind === "bare" ? proof.txRef : proof.bound.txRef;
  // Our own settlement of someone's authorization is visible in the mempool before it is redeemed:
  // its hash alone must not buy what the authorization's owner is waiting for.
  if (proof.kind === "bare" && proof.network === "base" && (await claimOfTransaction(deps.db, txRef)))
    return refuse({ kind: "payment_used", why: "claimed", consumptionKey: `base:${txRef}` });
  const verdict = await verifyPaymentProof({
    rails,
    proof,
    price: terms.price,
    resource: terms.resource,
    nowSeconds,
  });
  if (verdict.ok) return { ok: true, payment: verdict.payment };
  const details = { retryable: verdict.pending, ...(verdict.details ?? {}) };
  return refuse(
    verdict.pending
      ? {
          kind: "payment_pending",
          reason: verdict.reason,
          message: `${verdict.message}; nothing was consumed, retry with the same proof`,
          details,
        }
      : invalid(verdict.reason, verdict.message, details),
  );
}

function invalid(reason: string, message: string, details: Record<string, unknown>): PaidRefusal {
  return { kind: "payment_invalid", reason, message, details };
}

/**
 * Runs `redeem` while holding a short Redis guard on the payment, so a burst of requests with one
 * payment costs one Postgres transaction instead of one connection each; the others are told to
 * retry. The UNIQUE consumption key in Postgres remains what decides.
 */
async function withRedeemGuard<T>(
  ctx: PaidContext,
  payment: Pick<VerifiedPayment, "network" | "txRef">,
  redeem: () => Promise<T>,
): Promise<T | { ok: false; refusal: PaidRefusal }> {
  const { redis } = ctx.deps;
  const guard = keys.x402Redeeming(consumptionKey(payment));
  if (!(await redis.set(guard, ctx.requestId, { nx: true, pxMs: 15_000 })))
    return refuse({
      kind: "payment_pending",
      reason: "redeeming",
      message: "another request is redeeming this payment right now; nothing was consumed, retry shortly",
      details: { retryable: true },
    });
  try {
    return await redeem();
  } finally {
    await redis.del(guard).catch(() => 0);
  }
}
