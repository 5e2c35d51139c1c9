import type { OpenAPIHono } from "@hono/zod-openapi";
import { createRoute, z } from "@hono/zod-openapi";
import type { AppEnv } from "../env.ts";
import { checkHealth } from "../services/health.ts";

const Check = z.object({
  ok: z.boolean(),
  latencyMs: z.number(),
  error: z
    .enum(["timeout", "unreachable", "unexpected_reply"])
    .optional()
    .openapi({ description: "why the check failed; the driver's own message goes to the log only" }),
});
const Health = z
  .object({
    status: z.enum(["ok", "degraded"]),
    checks: z.object({ redis: Check, postgres: Check }),
  })
  .openapi("Health");

const route = createRoute({
  method: "get",
  path: "/health",
  summary: "Liveness with real dependency checks (Redis PING, Postgres SELECT 1)",
  tags: ["ops"],
  responses: {
    200: { description: "Every dependency answered", content: { "application/json": { schema: Health } } },
    503: { description: "A dependency failed", content: { "application/json": { schema: Health } } },
  },
});

export function registerHealth(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const report = await checkHealth(c.get("deps"));
    c.header("Cache-Control", "no-store");
    return c.json(report, report.status === "ok" ? 200 : 503);
  });
}
