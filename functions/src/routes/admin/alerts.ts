/** GET /v1/admin/alerts: the fleet watchdog's alerts and latest checks; operators only. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import {
  ALERTS_LIMIT,
  type AlertRow,
  CHECKS_WINDOW_HOURS,
  latestWatchdogChecks,
  listAlerts,
  type WatchdogCheckRow,
} from "../../services/alerts.ts";
import { ErrorBody, registerResellerAuth } from "../reseller/common.ts";
import { requireOpsReader } from "./common.ts";

const Alert = z
  .object({
    id: z.string().openapi({ example: "alert_1a2b3c4d5e6f7a8b9c0d1e2f" }),
    kind: z.enum(["watchdog_self", "watchdog_fleet"]).openapi({
      description:
        "watchdog_fleet: customers of one pool/country fail while others pass; watchdog_self: the watchdog's own vantage point (gateway, key, target) is broken, so the fleet cannot be judged",
    }),
    scope: z.string().openapi({
      description:
        "watchdog_fleet: `<pool>-<country>`; watchdog_self: the gateway URL the watchdog buys through",
      example: "peer-us",
    }),
    detail: z.record(z.string(), z.unknown()).openapi({
      description: "last failure: error code, consecutiveFailures, requestId (gateway logs), ...",
    }),
    openedAt: z.string(),
    lastSeenAt: z.string(),
    resolvedAt: z.string().nullable(),
  })
  .openapi("Alert");

const WatchdogCheck = z
  .object({
    pool: z.enum(["peer", "mbl", "self"]).openapi({ description: "`self`: the self-check (no gateway)" }),
    country: z.string().nullable(),
    runAt: z.string(),
    ok: z.boolean(),
    latencyMs: z.number().int().nullable(),
    error: z.string().nullable().openapi({ description: 'a stable code, prober/README.md "Fleet watchdog"' }),
  })
  .openapi("WatchdogCheck");

const route = createRoute({
  method: "get",
  path: "/v1/admin/alerts",
  summary: "Fleet watchdog alerts and the latest check per pool and country",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: {
    query: z.object({
      open: z
        .enum(["true", "false"])
        .optional()
        .openapi({ description: "true: only unresolved alerts; default: all, newest first" }),
    }),
  },
  responses: {
    200: {
      description: `Up to ${ALERTS_LIMIT} alerts, newest first; checks from the last ${CHECKS_WINDOW_HOURS} h`,
      content: {
        "application/json": {
          schema: z.object({ alerts: z.array(Alert), checks: z.array(WatchdogCheck) }).openapi("AlertList"),
        },
      },
    },
    400: { description: "Invalid input", content: { "application/json": { schema: ErrorBody } } },
    401: {
      description: "Missing or unknown X-API-Key",
      content: { "application/json": { schema: ErrorBody } },
    },
    403: {
      description:
        "E_SCOPE_REQUIRED (needs `operate` or `ops-agent`) or E_FORBIDDEN (not an operator or ops account)",
      content: { "application/json": { schema: ErrorBody } },
    },
  },
});

const iso = (d: Date | string) => new Date(d).toISOString();

function alertView(a: AlertRow) {
  return {
    id: a.id,
    kind: a.kind,
    scope: a.scope,
    detail: a.detail,
    openedAt: iso(a.opened_at),
    lastSeenAt: iso(a.last_seen_at),
    resolvedAt: a.resolved_at ? iso(a.resolved_at) : null,
  };
}

function checkView(c: WatchdogCheckRow) {
  return {
    pool: c.pool,
    country: c.country,
    runAt: iso(c.run_at),
    ok: c.ok,
    latencyMs: c.latency_ms,
    error: c.error,
  };
}

export function registerAdminAlerts(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  // Before validation: anonymous callers learn nothing about the schema.
  app.use("/v1/admin/alerts", async (c, next) => {
    await requireOpsReader(c, "alerts");
    await next();
  });

  app.openapi(route, async (c) => {
    const { open } = c.req.valid("query");
    const db = c.get("deps").db;
    const [alerts, checks] = await Promise.all([
      listAlerts(db, { open: open === "true" }),
      latestWatchdogChecks(db),
    ]);
    c.header("Cache-Control", "no-store");
    return c.json({ alerts: alerts.map(alertView), checks: checks.map(checkView) }, 200);
  });
}
