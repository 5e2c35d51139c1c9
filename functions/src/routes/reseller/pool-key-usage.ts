/** GET /v1/reseller/pool-keys/{id}/usage?days=: bytes per UTC day. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { getCredential, usageSeries } from "../../services/credentials.ts";
import { callerOf } from "../api-key.ts";
import { IdParam, KEY_ERRORS, notFound, registerResellerAuth, SECURITY, TAG } from "./common.ts";

const UsageQuery = z.object({
  days: z.coerce.number().int().min(1).max(90).default(30).openapi({ description: "1-90, today included" }),
});

const Usage = z
  .object({
    id: z.string(),
    capBytes: z.number().int(),
    usedBytes: z.number().int(),
    days: z.array(z.object({ date: z.string().openapi({ example: "2026-11-22" }), bytes: z.number().int() })),
  })
  .openapi("PoolKeyUsage");

const usageRoute = createRoute({
  method: "get",
  path: "/v1/reseller/pool-keys/{id}/usage",
  summary: "Bytes used per UTC day, oldest first, zero-filled; today is live",
  tags: [TAG],
  security: SECURITY,
  request: { params: IdParam, query: UsageQuery },
  responses: {
    200: { description: "The series", content: { "application/json": { schema: Usage } } },
    ...KEY_ERRORS,
  },
});

export function registerPoolKeyUsage(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app);
  app.openapi(usageRoute, async (c) => {
    const account = callerOf(c);
    const { id } = c.req.valid("param");
    const { days } = c.req.valid("query");
    const deps = c.get("deps");
    const row = await getCredential(deps.db, account.accountId, id);
    if (!row) throw notFound(id);
    const series = await usageSeries(deps, row, days);
    c.header("Cache-Control", "no-store");
    return c.json({ id: row.id, capBytes: Number(row.cap_bytes), ...series }, 200);
  });
}
