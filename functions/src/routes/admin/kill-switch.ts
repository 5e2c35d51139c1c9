/**
 * GET/POST /v1/admin/kill-switch: engaged, every autonomous loop records `skipped: kill_switch`
 * instead of acting. An ops-agent may engage it (the safe direction, capped per hour); only a human
 * operator's `operate` key releases it.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { changeKillSwitch, killSwitchState } from "../../services/kill-switch.ts";
import { callerOf, scopeRequired } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { requireOperatorOrAgent } from "./common.ts";

const State = z
  .object({
    engaged: z.boolean(),
    since: z.string().nullable().openapi({ description: "who engaged it and when" }),
  })
  .openapi("KillSwitch");

const ERRORS = {
  400: errorResponse("Invalid input; the message names the field"),
  401: errorResponse("Missing, unknown or revoked X-API-Key"),
  403: errorResponse(
    "E_SCOPE_REQUIRED: needs `operate` or `ops-agent`; releasing needs `operate` (a human). E_FORBIDDEN: not an operator or ops account",
  ),
} as const;

const getRoute = createRoute({
  method: "get",
  path: "/v1/admin/kill-switch",
  summary: "Whether the kill switch is engaged",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  responses: {
    200: { description: "The switch", content: { "application/json": { schema: State } } },
    401: ERRORS[401],
    403: ERRORS[403],
  },
});

const postRoute = createRoute({
  method: "post",
  path: "/v1/admin/kill-switch",
  summary: "Engage (operate or ops-agent) or release (operate only) the kill switch",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: {
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z
            .object({
              engaged: z.boolean(),
              reason: z.string().trim().min(1).max(500).optional().openapi({ description: "audited" }),
            })
            .strict()
            .openapi("KillSwitchSet"),
        },
      },
    },
  },
  responses: {
    200: { description: "The switch after the change", content: { "application/json": { schema: State } } },
    ...ERRORS,
    429: errorResponse("E_RATE_LIMITED: an ops-agent engages at most 10 times per hour"),
  },
});

export function registerAdminKillSwitch(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  app.use("/v1/admin/kill-switch", async (c, next) => {
    await requireOperatorOrAgent(c, "kill-switch routes");
    await next();
  });

  app.openapi(getRoute, async (c) => {
    c.header("Cache-Control", "no-store");
    return c.json(await killSwitchState(c.get("deps").redis), 200);
  });

  app.openapi(postRoute, async (c) => {
    const { engaged, reason } = c.req.valid("json");
    const deps = c.get("deps");
    const r = await changeKillSwitch(deps, {
      engaged,
      caller: callerOf(c),
      now: deps.now(),
      ...(reason ? { reason } : {}),
    });
    if (!r.ok && r.code === "human_only") throw scopeRequired("operate", "releasing the kill switch");
    if (!r.ok)
      throw new ApiError(
        "E_RATE_LIMITED",
        `an ops-agent engages the kill switch at most ${r.cap} times per hour`,
        {
          headers: { "Retry-After": String(r.retryAfterSeconds) },
        },
      );
    c.header("Cache-Control", "no-store");
    return c.json(r.state, 200);
  });
}
