/**
 * GET/POST /v1/admin/kill-switch: engaged, every autonomous loop records `skipped: kill_switch`
 * instead of acting. An ops-agent may engage it (the safe direction, capped per hour); only a human
 * operator's `operate` key releases it.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { killSwitchState, setKillSwitch } from "../../services/kill-switch.ts";
import { hitRateLimit } from "../../services/rate-limit.ts";
import { callerStore } from "../account/common.ts";
import { requireApiKey, scopeRequired } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";

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

const OPS_AGENT_ENGAGES_PER_HOUR = 10;
const callers = callerStore();

export function registerAdminKillSwitch(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  app.use("/v1/admin/kill-switch", async (c, next) => {
    const account = await requireApiKey(c, ["operate", "ops-agent"]);
    const human = account.accountKind === "operator" && account.scopes.includes("operate");
    const agent = account.accountKind === "ops" && account.scopes.includes("ops-agent");
    if (!human && !agent)
      throw new ApiError("E_FORBIDDEN", "the kill switch is for operator and ops accounts");
    callers.set(c, account);
    await next();
  });

  app.openapi(getRoute, async (c) => {
    c.header("Cache-Control", "no-store");
    return c.json(await killSwitchState(c.get("deps").redis), 200);
  });

  app.openapi(postRoute, async (c) => {
    const { engaged, reason } = c.req.valid("json");
    const caller = callers.get(c);
    const deps = c.get("deps");
    const human = caller.accountKind === "operator" && caller.scopes.includes("operate");
    if (!engaged && !human) throw scopeRequired("operate", "releasing the kill switch");
    if (!human) {
      const d = await hitRateLimit(
        deps.redis,
        "kill-switch",
        caller.apiKeyId,
        OPS_AGENT_ENGAGES_PER_HOUR,
        3_600_000,
      );
      if (!d.allowed)
        throw new ApiError(
          "E_RATE_LIMITED",
          `an ops-agent engages the kill switch at most ${OPS_AGENT_ENGAGES_PER_HOUR} times per hour`,
          {
            headers: { "Retry-After": String(d.retryAfterSeconds) },
          },
        );
    }
    const state = await setKillSwitch(deps, {
      engaged,
      actor: caller.apiKeyId,
      now: deps.now(),
      ...(reason ? { reason } : {}),
    });
    c.header("Cache-Control", "no-store");
    return c.json(state, 200);
  });
}
