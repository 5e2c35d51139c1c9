/**
 * How the x402 routes answer: the 402 price sheet, the paid 200 with its settlement headers, the
 * access body, and one mapping from the paid flow's refusals to errors.
 */
import type { Context } from "hono";
import { ApiError } from "../../../../shared/errors.ts";
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
import { poolCaveats } from "../../services/x402-caveats.ts";
import type { X402Rails } from "../../services/x402-config.ts";
import type { PaidRefusal } from "../../services/x402-paid-flow.ts";
import type { VerifiedPayment } from "../../services/x402-payment.ts";
import { DSL_SUMMARY, paymentOptions } from "../../services/x402-pricing.ts";
import type { MirrorState, X402Session } from "../../services/x402-purchase.ts";
import { fieldError } from "./guards.ts";

export function originOf(c: Context<AppEnv>): string {
  return new URL(c.req.url).origin;
}

export const HOW_TO_PAY =
  "Pay with a standard x402 EIP-3009 authorization (what x402 clients send: we settle it), or transfer the exact USDC amount to payTo and repeat this request with an x402 v2 payment header binding the tx to this resource with a signature of the paying wallet (or, where paymentPolicy.bareHash is on, Payment-Signature: <tx hash | Solana signature>).";

/** The proof policy this deployment applies, as the 402 states it. */
export function paymentPolicy(c: Context<AppEnv>) {
  const { config } = c.get("deps");
  return {
    bareHash: config.X402_BARE_HASH,
    proofs: ["eip3009", "bound", ...(config.X402_BARE_HASH === "on" ? ["bare"] : [])],
    note:
      config.X402_BARE_HASH === "off"
        ? "bare tx hashes are refused here: a mined hash is public and could be presented first by anyone watching payTo"
        : "bare tx hashes are accepted but can be front-run by anyone watching payTo: prefer eip3009 or bound",
  };
}

/** Answers 402: the x402 v1 body plus our catalog and proof policy, and the v2 PAYMENT-REQUIRED header. */
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
  const policy = paymentPolicy(c);
  const sheet = {
    resource: input.resource,
    description: input.description,
    priceMicro: input.priceMicro,
    options: paymentOptions(input.rails),
    error: `payment required: pay one of accepts[] and repeat this request with PAYMENT-SIGNATURE (or X-PAYMENT); ${policy.note}`,
  };
  c.header("PAYMENT-REQUIRED", encodePaymentRequiredHeader(buildPaymentRequiredV2(sheet)));
  c.header("Cache-Control", "no-store");
  return c.json({ ...buildPaymentRequiredV1(sheet), ...input.extra, paymentPolicy: policy }, 402);
}

/** The one mapping from a paid-flow refusal to its error; `connectionPath` is the product's re-emit route. */
export function refusalError(refusal: PaidRefusal, connectionPath: string): ApiError {
  switch (refusal.kind) {
    case "rate_limited":
      return new ApiError(
        "E_RATE_LIMITED",
        `too many x402_purchase requests; retry in ${refusal.retryAfterSeconds} s`,
        { headers: { "Retry-After": String(refusal.retryAfterSeconds) } },
      );
    case "bad_proof":
      return fieldError("Payment-Signature", refusal.message);
    case "payment_invalid":
      return new ApiError("E_PAYMENT_INVALID", `payment refused (${refusal.reason}): ${refusal.message}`, {
        details: { reason: refusal.reason, retryable: false, ...refusal.details },
        headers: { "Cache-Control": "no-store" },
      });
    case "payment_pending":
      return new ApiError(
        "E_PAYMENT_PENDING",
        `payment not final yet (${refusal.reason}): ${refusal.message}`,
        {
          details: { reason: refusal.reason, ...refusal.details },
          headers: { "Retry-After": "3", "Cache-Control": "no-store" },
        },
      );
    case "payment_used": {
      const details = { consumptionKey: refusal.consumptionKey, reason: refusal.why };
      if (refusal.why === "other_product")
        return new ApiError(
          "E_PAYMENT_USED",
          `payment ${refusal.consumptionKey} already bought (or is being settled for) a different product; pay again for this one`,
          { details },
        );
      return new ApiError(
        "E_PAYMENT_USED",
        refusal.why === "claimed"
          ? `payment ${refusal.consumptionKey} is claimed by the request that presented it first; a payment header never re-emits (it is public once settled): send X-Session-Token (GET ${connectionPath}), or an x402 v2 payment header whose binding is signed by the paying wallet`
          : `payment ${refusal.consumptionKey} was already redeemed; to get that access again send X-Session-Token (or GET ${connectionPath}), or an x402 v2 payment header whose binding is signed by the paying wallet`,
        { details: { ...details, reemit: ["X-Session-Token", "binding"] } },
      );
    }
    case "product_refused":
      // Products map their own refusals (the dedicated port's no-free-modem answer); a generic fallback.
      return new ApiError(
        "E_UNAVAILABLE",
        `the order could not be served (${refusal.reason}); nothing was consumed`,
        {
          details: { reason: refusal.reason, consumed: false },
        },
      );
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
  result: { kind: "minted" | "reemitted"; consumptionKey: string; mirror?: MirrorState },
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
      gatewaySync: result.mirror ?? "synced",
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
    caveats: poolCaveats(c.get("deps").config),
  };
}
