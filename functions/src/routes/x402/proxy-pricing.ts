/** GET /v1/x402/proxy/pricing: the dedicated-port price sheet and free modems per country (counts only). */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { countFree, listFreeModems } from "../../services/modem-reservations.ts";
import { dedicatedCaveats } from "../../services/x402-caveats.ts";
import { dedicatedCatalog, readDedicatedPricing } from "../../services/x402-dedicated.ts";
import { networkSheet } from "../../services/x402-pricing.ts";
import { originOf } from "./answers.ts";
import { sheetRails } from "./guards.ts";
import { PricingNetworks, TAG } from "./schemas.ts";

const Availability = z
  .record(
    z.string().openapi({ description: "ISO-2 country" }),
    z.object({ free: z.number().int(), carriers: z.record(z.string(), z.number().int()) }),
  )
  .openapi("X402DedicatedAvailability");

const Pricing = z
  .object({
    purchasable: z.boolean().openapi({ description: "false while the purchase route answers 503" }),
    product: z.string(),
    pricePerDayMicroUsdc: z.string().optional(),
    pricePerDayUsdc: z.string().optional(),
    includedGBPerDay: z.string().optional(),
    duration: z.object({ unit: z.string(), min: z.number().int(), max: z.number().int() }).optional(),
    rotation: z.record(z.string(), z.unknown()).optional(),
    availability: Availability,
    networks: PricingNetworks,
    purchaseUrl: z.string(),
    caveats: z.array(z.string()).openapi({ description: "generated from the running configuration" }),
  })
  .openapi("X402DedicatedPricing");

const pricingRoute = createRoute({
  method: "get",
  path: "/v1/x402/proxy/pricing",
  summary:
    "The dedicated-port price sheet: price per day, included traffic, duration limits, rotation, free modems per country, networks",
  tags: [TAG],
  responses: { 200: { description: "Catalog", content: { "application/json": { schema: Pricing } } } },
});

export function registerX402ProxyPricing(app: OpenAPIHono<AppEnv>) {
  app.openapi(pricingRoute, async (c) => {
    const deps = c.get("deps");
    const origin = originOf(c);
    const { rails, purchasable } = await sheetRails(c);
    const pricing = await readDedicatedPricing(deps.db);
    const availability = countFree(await listFreeModems(deps));
    // Availability moves with every rental: a short shared cache only.
    c.header("Cache-Control", "public, max-age=10");
    return c.json(
      {
        purchasable: purchasable && pricing !== null,
        product: "one production mobile modem, routed to your credential only, for whole days",
        ...(pricing ? dedicatedCatalog(pricing) : {}),
        availability,
        networks: networkSheet(rails),
        purchaseUrl: `${origin}/v1/x402/proxy?country=any&duration=${pricing?.minDays ?? 1}`,
        caveats: dedicatedCaveats(deps.config),
      },
      200,
    );
  });
}
