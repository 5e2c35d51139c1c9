/**
 * /v1/x402/manage/<product>/{usage,connection,regenerate,topup}: the session routes both products
 * answer alike, each with its own access answer.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { ApiError } from "../../../../shared/errors.ts";
import { quotePurchase } from "../../../../shared/x402/quote.ts";
import type { AppEnv } from "../../env.ts";
import { usageSeries } from "../../services/credentials.ts";
import { topup } from "../../services/x402-paid-flow.ts";
import { readTiers } from "../../services/x402-pricing.ts";
import { regenerateSessionSecret, unsealSecret, type X402Product } from "../../services/x402-purchase.ts";
import { creditOf, originOf, paymentRequired, refusalError, setPaymentResponse } from "./answers.ts";
import {
  type AuthedSession,
  enforceRateLimit,
  fieldError,
  paidContext,
  requestProof,
  requireRails,
  requireReadableBody,
  requireSession,
  usedOf,
} from "./guards.ts";
import {
  Credit,
  errorResponse,
  PAYMENT_ERRORS,
  PaymentHeaders,
  PaymentRequiredBody,
  SessionHeaders,
  TAG,
} from "./schemas.ts";

export const SESSION_ERRORS = {
  401: errorResponse("Missing or unknown X-Session-Token"),
  409: errorResponse("The session bought the other product: use its manage routes"),
} as const;

/** What differs between the products' session routes. */
export interface ManagedProduct<Access extends z.ZodType> {
  product: X402Product;
  /** `/v1/x402/manage/<product>` */
  base: string;
  /** The OpenAPI schema of the product's access answer. */
  Access: Access;
  connectionSummary: string;
  /** The product's access answer for this session, with `secret` as its password. */
  access(c: Context<AppEnv>, s: AuthedSession, secret: string): Promise<z.infer<Access>>;
}

const UsageBody = z
  .object({
    days: z.array(z.object({ date: z.string(), bytes: z.number().int() })),
    usedBytes: z.number().int(),
  })
  .openapi("X402Usage");

const usageRoute = (base: string) =>
  createRoute({
    method: "get",
    path: `${base}/usage`,
    summary: "Bytes per UTC day (today is live)",
    tags: [TAG],
    request: {
      headers: SessionHeaders,
      query: z.object({ days: z.coerce.number().int().min(1).max(90).default(7).openapi({ example: 7 }) }),
    },
    responses: {
      200: {
        description: "Per-day series",
        content: {
          "application/json": { schema: UsageBody },
        },
      },
      400: errorResponse("days out of range"),
      ...SESSION_ERRORS,
    },
  });

const connectionRoute = <Access extends z.ZodType>(p: ManagedProduct<Access>) =>
  createRoute({
    method: "get",
    path: `${p.base}/connection`,
    summary: p.connectionSummary,
    tags: [TAG],
    request: { headers: SessionHeaders },
    responses: {
      200: { description: "Access", content: { "application/json": { schema: p.Access } } },
      ...SESSION_ERRORS,
    },
  });

const regenerateRoute = <Access extends z.ZodType>(p: ManagedProduct<Access>) =>
  createRoute({
    method: "post",
    path: `${p.base}/regenerate`,
    summary: "New password, same username; the old one stops working (3 per hour)",
    tags: [TAG],
    request: { headers: SessionHeaders },
    responses: {
      200: {
        description: "Access with the new password",
        content: { "application/json": { schema: p.Access } },
      },
      429: errorResponse("Rate limited"),
      ...SESSION_ERRORS,
    },
  });

const TopupBody = z
  .object({
    credit: Credit,
    payment: z.object({
      network: z.string(),
      txRef: z.string(),
      consumptionKey: z.string(),
      amountMicroUsdc: z.string(),
      status: z.enum(["applied", "already_applied"]),
      gatewaySync: z.enum(["synced", "pending"]).optional(),
    }),
  })
  .openapi("X402Topup");

const topupRoute = (base: string) =>
  createRoute({
    method: "post",
    path: `${base}/topup`,
    summary: "More GB for the same credential: 402 quote, then pay; re-enables a key suspended at its cap",
    tags: [TAG],
    request: {
      headers: PaymentHeaders.extend({ "x-session-token": SessionHeaders.shape["x-session-token"] }),
      query: z.object({
        traffic: z.string().optional().openapi({ example: "1", description: "GB to add, at least 0.1" }),
      }),
    },
    responses: {
      ...PAYMENT_ERRORS,
      200: { description: "Topped up", content: { "application/json": { schema: TopupBody } } },
      402: {
        description: "The topup quote (x402)",
        content: { "application/json": { schema: PaymentRequiredBody } },
      },
      ...SESSION_ERRORS,
      409: errorResponse(
        "E_PAYMENT_USED (this payment bought something else), or E_CONFLICT (the session bought the other product)",
      ),
    },
  });

/** Registers usage, connection, regenerate and topup under `p.base` for sessions of `p.product`. */
export function registerSessionRoutes<Access extends z.ZodType>(
  app: OpenAPIHono<AppEnv>,
  p: ManagedProduct<Access>,
) {
  app.openapi(usageRoute(p.base), async (c) => {
    const s = await requireSession(c, p.product);
    const { days } = c.req.valid("query");
    c.header("Cache-Control", "no-store");
    return c.json(await usageSeries(c.get("deps"), s.credential, days), 200);
  });

  app.openapi(connectionRoute(p), async (c) => {
    const s = await requireSession(c, p.product);
    const secret = await unsealSecret(s.token, s.session.sealed_secret);
    if (!secret)
      throw new ApiError("E_INTERNAL", "the stored credential could not be opened with this token");
    c.header("Cache-Control", "no-store");
    return c.json(await p.access(c, s, secret), 200);
  });

  app.openapi(regenerateRoute(p), async (c) => {
    await requireReadableBody(c);
    const s = await requireSession(c, p.product);
    await enforceRateLimit(c, "x402_regenerate", s.session.id, 3, 3_600_000);
    const rails = await requireRails(c);
    const deps = c.get("deps");
    const out = await regenerateSessionSecret(
      { pool: deps.db, redis: deps.redis, now: deps.now },
      { houseAccountId: rails.houseAccountId, session: s.session, sessionToken: s.token },
    );
    c.header("Cache-Control", "no-store");
    return c.json(await p.access(c, { ...s, credential: out.credential }, out.secret), 200);
  });

  app.openapi(topupRoute(p.base), async (c) => {
    await requireReadableBody(c);
    return (await handleTopup(c, await requireSession(c, p.product), p.base)) as never;
  });
}

/**
 * POST <base>/topup for a session of either product: 402 quote at the tier's price per GB, then the
 * paid retry adds the bytes once per payment (re-enables a key suspended at its cap).
 */
async function handleTopup(c: Context<AppEnv>, s: AuthedSession, base: string): Promise<Response> {
  const deps = c.get("deps");
  const rails = await requireRails(c);
  const tier = (await readTiers(deps.db)).find((t) => t.name === s.credential.tier);
  if (!tier) throw new ApiError("E_UNAVAILABLE", `tier ${s.credential.tier} is not on sale any more`);
  const traffic = c.req.query("traffic");
  if (traffic === undefined) throw fieldError("traffic", "traffic (GB to add) is required");
  const quoted = quotePurchase({ pricePerGbMicro: tier.pricePerGbMicro, traffic });
  if (!quoted.ok) throw fieldError(quoted.field, quoted.message);
  const { quote } = quoted;
  const resource = `${originOf(c)}${base}/topup?traffic=${quote.trafficGb}`;

  const proof = requestProof(c);
  if (proof === null) {
    await enforceRateLimit(c, "x402_topup", s.session.id, 5, 60_000);
    return paymentRequired(c, {
      rails,
      resource,
      description: `topup: ${quote.trafficGb} GB more for ${s.session.username}`,
      priceMicro: quote.priceMicro,
      extra: { order: { trafficGB: quote.trafficGb, priceMicroUsdc: quote.priceMicro.toString() } },
    });
  }
  // The purchase's proof policy, per-IP limit, verification, claim and guard (services/x402-paid-flow.ts).
  const outcome = await topup({
    ctx: paidContext(c, rails),
    session: s.session,
    sessionToken: s.token,
    proof,
    order: { addBytes: quote.trafficBytes, priceMicro: quote.priceMicro, resource },
  });
  if (!outcome.ok) throw refusalError(outcome.refusal, `${base}/connection`);
  const { payment, result } = outcome;
  setPaymentResponse(c, payment);
  c.header("Cache-Control", "no-store");
  return c.json(
    {
      credit: creditOf(result.credential, await usedOf(c, result.credential.id)),
      payment: {
        network: payment.network,
        txRef: payment.txRef,
        consumptionKey: `${payment.network}:${payment.txRef}`,
        amountMicroUsdc: payment.amount.toString(),
        status: result.kind,
        gatewaySync: result.mirror ?? "synced",
      },
    },
    200,
  );
}
