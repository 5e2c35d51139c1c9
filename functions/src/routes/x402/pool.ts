/** GET|POST /v1/x402/pool: unpaid -> 402 price sheet; paid -> verify on-chain, mint once, answer access. */
import { type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../../env.ts";
import { purchase } from "../../services/x402-paid-flow.ts";
import { catalog, parsePoolOrder, poolResource, productKey } from "../../services/x402-pricing.ts";
import { redeemPoolPurchase } from "../../services/x402-purchase.ts";
import {
  accessBody,
  HOW_TO_PAY,
  originOf,
  paymentRequired,
  purchaseAnswer,
  refusalError,
} from "./answers.ts";
import { fieldError, paidContext, requestProof, requireRails, usedOf } from "./guards.ts";
import { PoolAccess, registerPurchaseRoute } from "./schemas.ts";

const PoolQuery = z.object({
  tier: z
    .string()
    .optional()
    .openapi({ example: "mbl", description: "tier on sale (see /v1/x402/pool/pricing)" }),
  country: z.string().optional().openapi({ example: "us", description: "ISO-2 with live stock, or any" }),
  traffic: z
    .string({ error: "traffic (GB) is required" })
    .openapi({ example: "0.5", description: "GB (10^9 bytes), at least 0.1" }),
  duration: z.string().optional().openapi({ example: "30", description: "days, 1-90, default 30; free" }),
  sid: z.string().optional().openapi({ example: "myjob123", description: "sticky session id, 8-64 a-z0-9_" }),
  rot: z.string().optional().openapi({ example: "sticky", description: "rotation mode (needs sid)" }),
});

async function handle(c: Context<AppEnv>): Promise<Response> {
  const deps = c.get("deps");
  const rails = await requireRails(c);
  const origin = originOf(c);
  const query = c.req.query();
  const { body: catalogBody, tiers, countries } = await catalog(deps.db, origin, rails);
  const parsed = parsePoolOrder(query, tiers, countries);
  if (!parsed.ok) throw fieldError(parsed.field, parsed.message);
  const { order } = parsed;
  const resource = poolResource(origin, order);
  const price = order.quote.priceMicro;

  const proof = requestProof(c);
  if (proof === null)
    return paymentRequired(c, {
      rails,
      resource,
      description: `${order.quote.trafficGb} GB of ${order.tier.name} pool traffic (${order.country}), ${order.quote.durationDays} days`,
      priceMicro: price,
      extra: {
        order: {
          tier: order.tier.name,
          country: order.country,
          trafficGB: order.quote.trafficGb,
          durationDays: order.quote.durationDays,
          priceMicroUsdc: price.toString(),
        },
        catalog: catalogBody,
        countries,
        howToPay: HOW_TO_PAY,
      },
    });

  const outcome = await purchase({
    ctx: paidContext(c, rails),
    product: "pool",
    proof,
    order: {
      productKey: productKey(order),
      priceMicro: price,
      resource,
      redeem: ({ payment, sessionToken, mintToken }) =>
        redeemPoolPurchase(
          { pool: deps.db, redis: deps.redis, now: deps.now },
          {
            houseAccountId: rails.houseAccountId,
            payment,
            order,
            priceMicro: price,
            sessionToken,
            ...(mintToken ? { mintToken } : {}),
          },
        ),
    },
  });
  if (!outcome.ok) throw refusalError(outcome.refusal, "/v1/x402/manage/pool/connection");
  const { payment, access } = outcome;
  const used = await usedOf(c, access.credential.id);
  return purchaseAnswer(c, payment, access, accessBody(c, { ...access, usedBytes: used, countries }));
}

export function registerX402Pool(app: OpenAPIHono<AppEnv>) {
  registerPurchaseRoute(
    app,
    {
      path: "/v1/x402/pool",
      summary:
        "Buy pool access with USDC: without payment the 402 is the price sheet; with payment, credentials",
      query: PoolQuery,
      access: { description: "Access minted (or re-emitted to its proven owner)", schema: PoolAccess },
      quoteDescription:
        "Payment required: x402 v1 body plus catalog; x402 v2 object in the PAYMENT-REQUIRED header",
    },
    handle,
  );
}
