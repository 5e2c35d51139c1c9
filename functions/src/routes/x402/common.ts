/**
 * What the x402 routes share: readiness gate, session auth, the purchase route with its 402 and
 * paid answers, the access body, errors.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { readCredentialState } from "../../../../shared/credentials.ts";
import { ApiError } from "../../../../shared/errors.ts";
import { keys } from "../../../../shared/keys.ts";
import { CAIP2 } from "../../../../shared/x402/networks.ts";
import {
  buildPaymentRequiredV1,
  buildPaymentRequiredV2,
  encodeBase64Json,
  encodePaymentRequiredHeader,
  formatGb,
} from "../../../../shared/x402/quote.ts";
import type { AppEnv } from "../../env.ts";
import { type CredentialRow, toPoolKey } from "../../services/credentials.ts";
import { hitRateLimit } from "../../services/rate-limit.ts";
import { railsFromConfig, type X402Rails, x402Readiness } from "../../services/x402-config.ts";
import {
  consumptionKey,
  type PaymentProof,
  type PaymentVerdict,
  type ProofParse,
  readPaymentProof,
  type VerifiedPayment,
  verifyOrRecallPayment,
} from "../../services/x402-payment.ts";
import { DSL_SUMMARY, paymentOptions } from "../../services/x402-pricing.ts";
import { sessionByToken, type X402Product, type X402Session } from "../../services/x402-purchase.ts";
import { errorSchema } from "../errors.ts";

export const TAG = "x402";

export function originOf(c: Context<AppEnv>): string {
  return new URL(c.req.url).origin;
}

/** The rails, or 503 naming what is missing: no money is taken in a half-configured state. */
export async function requireRails(c: Context<AppEnv>): Promise<X402Rails> {
  const deps = c.get("deps");
  const ready = await x402Readiness({ config: deps.config, db: deps.db, now: deps.now });
  if (!ready.ok)
    throw new ApiError("E_UNAVAILABLE", `x402 purchases are unavailable: ${ready.problems.join("; ")}`, {
      details: { problems: ready.problems },
      headers: { "Retry-After": "30", "Cache-Control": "no-store" },
    });
  return ready.rails;
}

/**
 * For the price sheets, which answer even while purchases are off: the configured rails (null when
 * there are none) and whether purchases are open.
 */
export async function sheetRails(
  c: Context<AppEnv>,
): Promise<{ rails: X402Rails | null; purchasable: boolean }> {
  const deps = c.get("deps");
  const built = railsFromConfig(deps.config);
  if (!built.ok) return { rails: null, purchasable: false };
  return { rails: built.rails, purchasable: (await x402Readiness(deps)).ok };
}

/** A 400 in the validation hook's shape, naming the field. */
export function fieldError(field: string, message: string): ApiError {
  return new ApiError("E_VALIDATION", `invalid request: ${field}: ${message}`, {
    details: { issues: [{ path: field, message }] },
  });
}

export function clientIp(c: Context<AppEnv>): string {
  return c.req.header("cf-connecting-ip") ?? "unknown";
}

export async function enforceRateLimit(
  c: Context<AppEnv>,
  scope: string,
  id: string,
  limit: number,
  windowMs: number,
): Promise<void> {
  const decision = await hitRateLimit(c.get("deps").redis, scope, id, limit, windowMs);
  if (!decision.allowed)
    throw new ApiError(
      "E_RATE_LIMITED",
      `too many ${scope} requests; retry in ${decision.retryAfterSeconds} s`,
      {
        headers: { "Retry-After": String(decision.retryAfterSeconds) },
      },
    );
}

export interface AuthedSession {
  session: X402Session;
  credential: CredentialRow;
  token: string;
}

/** The session behind X-Session-Token (401 without one), bought as `product` (409 otherwise). */
export async function requireSession(c: Context<AppEnv>, product: X402Product): Promise<AuthedSession> {
  const token = c.req.header("x-session-token");
  if (!token) throw new ApiError("E_UNAUTHORIZED", "X-Session-Token header is required (x402s_...)");
  const found = await sessionByToken(c.get("deps").db, token);
  if (!found) throw new ApiError("E_UNAUTHORIZED", "X-Session-Token is not a valid session token");
  if (found.session.product !== product)
    throw new ApiError(
      "E_CONFLICT",
      `this session bought ${found.session.product === "proxy" ? "a dedicated port" : "pool access"}: manage it under /v1/x402/manage/${found.session.product}/`,
      { details: { product: found.session.product } },
    );
  return { ...found, token };
}

/** Bytes the gateway's meter has counted for a key (0 before its first flush). */
export async function usedOf(c: Context<AppEnv>, keyId: string): Promise<number> {
  return (await readCredentialState(c.get("deps").redis, [keyId])).get(keyId)?.usedBytes ?? 0;
}

export const HOW_TO_PAY =
  "Transfer the exact USDC amount to payTo on one network, then repeat this request with header Payment-Signature: <tx hash | Solana signature> (or an x402 v2 payment header).";

/** Answers 402: the x402 v1 body plus our catalog, and the v2 PAYMENT-REQUIRED header. */
export function paymentRequired(
  c: Context<AppEnv>,
  input: {
    rails: X402Rails;
    resource: string;
    description: string;
    priceMicro: bigint;
    extra: Record<string, unknown>;
  },
) {
  const sheet = {
    resource: input.resource,
    description: input.description,
    priceMicro: input.priceMicro,
    options: paymentOptions(input.rails),
    error:
      "payment required: pay one of accepts[] and repeat this request with Payment-Signature (or X-PAYMENT)",
  };
  c.header("PAYMENT-REQUIRED", encodePaymentRequiredHeader(buildPaymentRequiredV2(sheet)));
  c.header("Cache-Control", "no-store");
  return c.json({ ...buildPaymentRequiredV1(sheet), ...input.extra }, 402);
}

/** The proof in Payment-Signature or X-PAYMENT; null when the request carries none (it gets the 402). */
export function requestProof(c: Context<AppEnv>): ProofParse | null {
  return readPaymentProof({
    paymentSignature: c.req.header("payment-signature"),
    xPayment: c.req.header("x-payment"),
  });
}

/**
 * A paid purchase attempt: rate limited per client IP, then the proof must parse and be a form this
 * deployment accepts (X402_BARE_HASH=off refuses bare references, docs/adr/0002).
 */
export async function acceptedProof(c: Context<AppEnv>, proof: ProofParse): Promise<PaymentProof> {
  const { config } = c.get("deps");
  await enforceRateLimit(c, "x402_purchase", clientIp(c), config.X402_RATE_LIMIT_PURCHASE_PER_MINUTE, 60_000);
  if (!proof.ok) throw fieldError("Payment-Signature", proof.message);
  if (proof.proof.kind === "bare" && config.X402_BARE_HASH === "off")
    throw fieldError(
      "Payment-Signature",
      "bare transaction references are not accepted here; send the x402 v2 payment header with a binding signed by the paying wallet, or an EIP-3009 authorization",
    );
  return proof.proof;
}

/** The 409 for a payment that already bought something: another product, or this one (needs proof to re-emit). */
export function paymentUsed(
  result: { kind: "used_for_other" | "needs_proof"; consumptionKey: string },
  connectionPath: string,
): ApiError {
  if (result.kind === "used_for_other")
    return new ApiError(
      "E_PAYMENT_USED",
      `payment ${result.consumptionKey} already bought a different product; pay again for this one`,
      { details: { consumptionKey: result.consumptionKey } },
    );
  return new ApiError(
    "E_PAYMENT_USED",
    `payment ${result.consumptionKey} was already redeemed; to get that access again send X-Session-Token (or GET ${connectionPath}), or an x402 v2 payment header whose binding is signed by the paying wallet`,
    { details: { consumptionKey: result.consumptionKey, reemit: ["X-Session-Token", "binding"] } },
  );
}

/** Maps a failed verification to its answer: pending consumes nothing and says retry. */
export function paymentFailure(verdict: Extract<PaymentVerdict, { ok: false }>): ApiError {
  const details = { reason: verdict.reason, retryable: verdict.pending, ...(verdict.details ?? {}) };
  if (verdict.pending)
    return new ApiError(
      "E_PAYMENT_PENDING",
      `payment not final yet (${verdict.reason}): ${verdict.message}; nothing was consumed, retry with the same proof`,
      {
        details,
        headers: { "Retry-After": "3", "Cache-Control": "no-store" },
      },
    );
  return new ApiError("E_PAYMENT_INVALID", `payment refused (${verdict.reason}): ${verdict.message}`, {
    details,
    headers: { "Cache-Control": "no-store" },
  });
}

/** The payment `proof` shows for `price` of `resource`, verified on-chain or recalled; a refusal throws. */
export async function verifiedPayment(
  c: Context<AppEnv>,
  input: { rails: X402Rails; proof: PaymentProof; price: bigint; resource: string },
): Promise<VerifiedPayment> {
  const deps = c.get("deps");
  const verdict = await verifyOrRecallPayment({
    db: deps.db,
    ...input,
    nowSeconds: Math.floor(deps.now().getTime() / 1000),
  });
  if (!verdict.ok) throw paymentFailure(verdict);
  return verdict.payment;
}

/**
 * Runs `redeem` while holding a short Redis guard on the payment, so a burst of requests with one
 * payment costs one Postgres transaction instead of one connection each; the others are told to
 * retry. The UNIQUE consumption key in Postgres remains what decides.
 */
export async function withRedeemGuard<T>(
  c: Context<AppEnv>,
  payment: Pick<VerifiedPayment, "network" | "txRef">,
  redeem: () => Promise<T>,
): Promise<T> {
  const { redis } = c.get("deps");
  const guard = keys.x402Redeeming(consumptionKey(payment));
  if (!(await redis.set(guard, c.get("requestId"), { nx: true, pxMs: 15_000 })))
    throw paymentFailure({
      ok: false,
      pending: true,
      reason: "redeeming",
      message: "another request is redeeming this payment right now",
    });
  try {
    return await redeem();
  } finally {
    await redis.del(guard).catch(() => 0);
  }
}

/** x402 clients read the settlement from PAYMENT-RESPONSE (v2) / X-PAYMENT-RESPONSE (v1). */
export function setPaymentResponse(
  c: Context<AppEnv>,
  payment: Pick<VerifiedPayment, "network" | "txRef" | "payer">,
) {
  const value = encodeBase64Json({
    success: true,
    transaction: payment.txRef,
    network: CAIP2[payment.network],
    payer: payment.payer,
  });
  c.header("PAYMENT-RESPONSE", value);
  c.header("X-PAYMENT-RESPONSE", value);
}

/** The 200 of a paid purchase: the product's access answer plus what was paid, and the settlement headers. */
export function purchaseAnswer(
  c: Context<AppEnv>,
  payment: VerifiedPayment,
  result: { kind: "minted" | "reemitted"; consumptionKey: string },
  access: object,
) {
  setPaymentResponse(c, payment);
  c.header("Cache-Control", "no-store");
  return c.json({
    ...access,
    payment: {
      network: payment.network,
      txRef: payment.txRef,
      consumptionKey: result.consumptionKey,
      payer: payment.payer,
      amountMicroUsdc: payment.amount.toString(),
      status: result.kind,
    },
  });
}

/** Where and how to connect through the gateway: host, ports, the credential and ready-made URLs. */
export function proxyEndpoint(c: Context<AppEnv>, username: string, secret: string) {
  const { config } = c.get("deps");
  const host = config.GATEWAY_PUBLIC_HOST;
  const enc = (s: string) => encodeURIComponent(s);
  return {
    host,
    httpPort: config.GATEWAY_HTTP_PORT,
    socksPort: config.GATEWAY_SOCKS_PORT,
    username,
    password: secret,
    http: `http://${enc(username)}:${enc(secret)}@${host}:${config.GATEWAY_HTTP_PORT}`,
    socks5: `socks5://${enc(username)}:${enc(secret)}@${host}:${config.GATEWAY_SOCKS_PORT}`,
  };
}

export const CAVEATS = [
  "Sticky pins the device (modem), not the exit IP: carriers re-issue mobile IPs on their own schedule.",
  "Stickiness needs a sid in the username (-sid-<8-64 a-z0-9_>); without one every connection is a fresh pick.",
  "The cap is enforced from metering flushes at most 5 s apart: expect the key to suspend within ~5-35 s after the cap, so a little traffic past the cap is possible.",
  "Keep the sessionToken: it is the only way to see credit, top up, regenerate and re-emit the password.",
  "A bare tx hash is public once mined: the first request presenting it receives the credential. Prefer the bound form (x402 v2 payment header signed by the paying wallet); a bare hash can never re-emit an existing credential.",
  "Traffic is metered per GB in both directions; unused GB are not refunded; duration is free.",
];

function gb(bytes: number): number {
  return Number(formatGb(BigInt(bytes)));
}

export function creditOf(credential: CredentialRow, usedBytes: number) {
  const key = toPoolKey(credential, usedBytes);
  return {
    tier: key.tier,
    allocatedGB: gb(key.capBytes),
    usedGB: gb(key.usedBytes),
    remainingGB: gb(key.remainingBytes),
    allocatedBytes: key.capBytes,
    usedBytes: key.usedBytes,
    remainingBytes: key.remainingBytes,
    enabled: key.enabled,
    suspendedReason: key.suspendedReason,
    expiresAt: key.expiresAt,
  };
}

export function manageUrls(origin: string) {
  const base = `${origin}/v1/x402/manage/pool`;
  return {
    header: "X-Session-Token",
    credit: `${base}/credit`,
    usage: `${base}/usage?days=7`,
    topup: `${base}/topup?traffic=1`,
    regenerate: `${base}/regenerate`,
    connection: `${base}/connection`,
  };
}

/** The full access answer: proxy block, credit, session, manage URLs, caveats. */
export function accessBody(
  c: Context<AppEnv>,
  input: {
    session: X402Session;
    credential: CredentialRow;
    secret: string;
    sessionToken: string;
    usedBytes: number;
    countries: string[];
  },
) {
  const origin = originOf(c);
  const { session, credential } = input;
  return {
    product: {
      type: session.product,
      tier: credential.tier,
      country: credential.country,
      allocatedGB: gb(Number(credential.cap_bytes)),
      expiresAt: credential.expires_at ? new Date(credential.expires_at).toISOString() : null,
    },
    proxy: {
      ...proxyEndpoint(c, session.username, input.secret),
      usernameTemplate: `psx_${credential.account_label}-${credential.pool}-{country}[-sid-{sid}][-rot-{rot}]`,
      allowed: {
        pools: [credential.pool],
        countries: ["any", ...input.countries],
        rot: DSL_SUMMARY.rot,
        sid: DSL_SUMMARY.sid,
      },
    },
    credit: creditOf(credential, input.usedBytes),
    sessionToken: input.sessionToken,
    manage: manageUrls(origin),
    stockUrl: `${origin}/v1/gateway/pool/stock`,
    caveats: CAVEATS,
  };
}

// OpenAPI shapes (documentation of the contract; handlers build the bodies above).
export const { ErrorBody, errorResponse } = errorSchema("X402Error");

export const PaymentRequiredBody = z
  .object({
    x402Version: z.literal(1),
    error: z.string(),
    accepts: z.array(
      z.object({
        scheme: z.literal("exact"),
        network: z.enum(["base", "solana"]),
        maxAmountRequired: z.string().openapi({ description: "integer micro-USDC" }),
        asset: z.string(),
        payTo: z.string(),
        resource: z.string(),
        description: z.string(),
        mimeType: z.string(),
        maxTimeoutSeconds: z.number().int(),
        extra: z.record(z.string(), z.unknown()),
      }),
    ),
  })
  .passthrough()
  .openapi("X402PaymentRequired");

export const PricingNetworks = z.array(
  z.object({
    network: z.string(),
    caip2: z.string(),
    payTo: z.string(),
    asset: z.string(),
    decimals: z.number(),
  }),
);

export const Credit = z
  .object({
    tier: z.string(),
    allocatedGB: z.number(),
    usedGB: z.number(),
    remainingGB: z.number(),
    allocatedBytes: z.number().int(),
    usedBytes: z.number().int(),
    remainingBytes: z.number().int(),
    enabled: z.boolean(),
    suspendedReason: z.string().nullable(),
    expiresAt: z.string().nullable(),
  })
  .openapi("X402Credit");

export const ProxyEndpoint = z.object({
  host: z.string(),
  httpPort: z.number().int(),
  socksPort: z.number().int(),
  username: z.string(),
  password: z.string().openapi({ description: "the pak_ secret" }),
  http: z.string(),
  socks5: z.string(),
});

export const PurchasePayment = z.object({
  network: z.string(),
  txRef: z.string(),
  consumptionKey: z.string(),
  payer: z.string(),
  amountMicroUsdc: z.string(),
  status: z.enum(["minted", "reemitted"]),
});

export const PoolAccess = z
  .object({
    product: z.object({
      type: z.string(),
      tier: z.string(),
      country: z.string(),
      allocatedGB: z.number(),
      expiresAt: z.string().nullable(),
    }),
    proxy: ProxyEndpoint.extend({
      usernameTemplate: z.string(),
      allowed: z.record(z.string(), z.unknown()),
    }),
    credit: Credit,
    sessionToken: z.string().openapi({ description: "x402s_...; keep it: the only manage/recovery handle" }),
    manage: z.record(z.string(), z.string()),
    stockUrl: z.string(),
    caveats: z.array(z.string()),
    payment: PurchasePayment.optional(),
  })
  .openapi("X402PoolAccess");

export const PaymentHeaders = z.object({
  "payment-signature": z
    .string()
    .optional()
    .openapi({
      param: { name: "payment-signature", in: "header" },
      description:
        "A Base tx hash, a Solana signature, or an x402 v2 payment (base64 JSON: bound tx reference or EIP-3009 `exact` authorization)",
    }),
  "x-payment": z
    .string()
    .optional()
    .openapi({ param: { name: "x-payment", in: "header" }, description: "x402 v1 payment (base64 JSON)" }),
  "x-session-token": z
    .string()
    .optional()
    .openapi({
      param: { name: "x-session-token", in: "header" },
      description: "x402s_...; re-emits an existing purchase",
    }),
});

export const SessionHeaders = z.object({
  "x-session-token": z.string().openapi({
    param: { name: "x-session-token", in: "header" },
    description: "x402s_... from the purchase",
  }),
});

export const PAYMENT_ERRORS = {
  400: errorResponse("Invalid order or payment header; the message names the field"),
  402: errorResponse(
    "Payment refused on-chain (details.reason: wrong_recipient, no_usdc_transfer, underpaid, reverted, wrong_chain, ...)",
  ),
  409: errorResponse(
    "E_PAYMENT_USED: this payment already bought something else, or re-emission needs proof",
  ),
  429: errorResponse("Rate limited"),
  503: errorResponse(
    "E_PAYMENT_PENDING (retry with the same proof) or E_UNAVAILABLE (purchases not configured)",
  ),
} as const;

/**
 * A product's purchase route, on GET and alike on POST (for clients that POST): unpaid, the 402 is
 * the price sheet; paid, `handle` answers access.
 */
export function registerPurchaseRoute(
  app: OpenAPIHono<AppEnv>,
  spec: {
    path: string;
    summary: string;
    query: z.ZodObject;
    access: { description: string; schema: z.ZodType };
    quoteDescription: string;
    errors?: Record<number, ReturnType<typeof errorResponse>>;
  },
  handle: (c: Context<AppEnv>) => Promise<Response>,
) {
  for (const method of ["get", "post"] as const) {
    const route = createRoute({
      method,
      path: spec.path,
      summary: method === "get" ? spec.summary : "Same as GET (for clients that POST)",
      tags: [TAG],
      request: { query: spec.query, headers: PaymentHeaders },
      responses: {
        ...PAYMENT_ERRORS,
        200: {
          description: spec.access.description,
          content: { "application/json": { schema: spec.access.schema } },
        },
        402: {
          description: spec.quoteDescription,
          content: { "application/json": { schema: PaymentRequiredBody } },
        },
        ...spec.errors,
      },
    });
    app.openapi(route, (c) => handle(c) as never);
  }
}
