/** GET /v1/x402/pool/pricing: the catalog (tiers, limits, networks, DSL). Answers even when purchases are off. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { poolCaveats } from "../../services/x402-caveats.ts";
import { catalog } from "../../services/x402-pricing.ts";
import { originOf } from "./answers.ts";
import { sheetRails } from "./guards.ts";
import { PricingNetworks, TAG } from "./schemas.ts";

const Pricing = z
  .object({
    purchasable: z.boolean().openapi({ description: "false while the purchase routes answer 503" }),
    tiers: z.array(
      z.object({
        tier: z.string(),
        description: z.string(),
        pricePerGbMicroUsdc: z.string(),
        pricePerGbUsdc: z.string(),
      }),
    ),
    traffic: z.object({ unit: z.string(), minimumGB: z.string(), bytesPerGB: z.string() }),
    duration: z.object({ unit: z.string(), default: z.number(), max: z.number(), price: z.string() }),
    networks: PricingNetworks,
    countries: z.array(z.string()),
    dsl: z.record(z.string(), z.unknown()),
    stockUrl: z.string(),
    purchaseUrl: z.string(),
    caveats: z.array(z.string()).openapi({ description: "generated from the running configuration" }),
  })
  .openapi("X402Pricing");

const pricing = createRoute({
  method: "get",
  path: "/v1/x402/pool/pricing",
  summary: "The pool price sheet: tiers, minimum, duration rules, networks with recipient and asset, DSL",
  tags: [TAG],
  responses: { 200: { description: "Catalog", content: { "application/json": { schema: Pricing } } } },
});

export function registerX402Pricing(app: OpenAPIHono<AppEnv>) {
  app.openapi(pricing, async (c) => {
    const origin = originOf(c);
    const { rails, purchasable } = await sheetRails(c);
    const { body } = await catalog(c.get("deps").db, origin, rails);
    c.header("Cache-Control", "public, max-age=30");
    return c.json(
      {
        purchasable,
        ...body,
        purchaseUrl: `${origin}/v1/x402/pool?tier=mbl&country=any&traffic=0.1`,
        caveats: poolCaveats(c.get("deps").config),
      },
      200,
    );
  });
}
