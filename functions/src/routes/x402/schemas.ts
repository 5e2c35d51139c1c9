/** The x402 routes' contract: OpenAPI shapes, the shared headers and errors, the purchase route. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../../env.ts";
import { errorSchema } from "../errors.ts";
import { requireReadableBody } from "./guards.ts";

export const TAG = "x402";

// OpenAPI shapes (documentation of the contract; handlers build the bodies in answers.ts).
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
  gatewaySync: z.enum(["synced", "pending"]).optional().openapi({
    description: "pending: the gateway picks the key up within seconds (repaired on the next read)",
  }),
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
    "E_PAYMENT_USED: this payment already bought something else, is claimed by another request (an EIP-3009 authorization), or re-emission needs proof",
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
    app.openapi(route, async (c) => {
      await requireReadableBody(c);
      return (await handle(c)) as never;
    });
  }
}
