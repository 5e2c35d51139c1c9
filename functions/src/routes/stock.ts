import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../env.ts";
import { readStock } from "../services/stock.ts";

const Counts = z.object({ routable: z.number().int(), online: z.number().int() });
const Stock = z
  .object({
    updatedAt: z.string().nullable().openapi({ description: "When the rollup was computed (every minute)" }),
    pools: z.record(
      z.enum(["mbl", "peer"]),
      z.object({ routable: z.number().int(), countries: z.record(z.string(), Counts) }),
    ),
  })
  .openapi("PoolStock");

const route = createRoute({
  method: "get",
  path: "/v1/gateway/pool/stock",
  summary: "Live inventory: counts per pool and country (never an address)",
  tags: ["gateway"],
  responses: {
    200: {
      description: "Counts from the materialized rollup",
      content: { "application/json": { schema: Stock } },
    },
  },
});

export function registerStock(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    c.header("Cache-Control", "public, max-age=30");
    return c.json(await readStock(c.get("deps").db), 200);
  });
}
