/**
 * Reversible, capped operations actions (ADR 0018), for a human operator's `operate` key or an AI
 * operator's `ops-agent` key: POST /v1/admin/devices/{id}/delist|relist|reprobe, GET
 * /v1/admin/loops, POST /v1/admin/loops/{name}/pause|resume. An ops-agent key is capped per hour
 * per action (429 naming the cap and when it resets); while the kill switch is engaged it may still
 * delist and pause (the safe direction) but not relist, re-probe or resume (409).
 */

import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { ApiError } from "../../../../shared/errors.ts";
import { keys } from "../../../../shared/keys.ts";
import type { AppEnv } from "../../env.ts";
import { isHumanOperator } from "../../services/auth.ts";
import {
  delistDevice,
  exitKind,
  LOOPS,
  type OpsAction,
  relistDevice,
  reprobe,
  setLoopPaused,
  spendOpsCap,
} from "../../services/ops-actions.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { requireOperatorOrAgent } from "./common.ts";

const ERRORS = {
  400: errorResponse("Invalid input; the message names the field"),
  401: errorResponse("Missing, unknown or revoked X-API-Key"),
  403: errorResponse(
    "E_SCOPE_REQUIRED: needs `operate` or `ops-agent`; E_FORBIDDEN: not an operator or ops account",
  ),
  409: errorResponse("E_CONFLICT: the kill switch is engaged and an ops-agent may only delist and pause"),
  429: errorResponse(
    "E_RATE_LIMITED: the ops-agent key's hourly cap for this action; details name the cap and resetsAt",
  ),
} as const;

const DeviceParam = z.object({
  id: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,128}$/, "must be a device or modem exit id")
    .openapi({ param: { name: "id", in: "path" }, example: "agent_0123456789abcdef" }),
});
const LoopParam = z.object({
  name: z.enum(LOOPS).openapi({ param: { name: "name", in: "path" }, example: "payouts" }),
});
const ReasonBody = {
  required: false,
  content: {
    "application/json": {
      schema: z
        .object({ reason: z.string().trim().min(1).max(500).optional().openapi({ description: "audited" }) })
        .strict()
        .openapi("OpsReason"),
    },
  },
} as const;

const DeviceState = z
  .object({
    id: z.string(),
    delisted: z.boolean().optional().openapi({ description: "held off sale by an operations delist" }),
    probeDue: z.boolean().optional().openapi({ description: "the next probe is due now" }),
  })
  .openapi("OpsDeviceState");
const LoopState = z
  .object({ name: z.string(), paused: z.boolean(), since: z.string().nullable() })
  .openapi("LoopState");

const deviceResponses = {
  200: { description: "Done (audited)", content: { "application/json": { schema: DeviceState } } },
  ...ERRORS,
  404: errorResponse("E_NOT_FOUND: no such device (or modem exit, for reprobe)"),
} as const;

const delistRoute = createRoute({
  method: "post",
  path: "/v1/admin/devices/{id}/delist",
  summary: "Take a device off sale until relisted (ops-agent: capped)",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: { params: DeviceParam, body: ReasonBody },
  responses: deviceResponses,
});

const pauseRoute = createRoute({
  method: "post",
  path: "/v1/admin/loops/{name}/pause",
  summary: "Pause one loop: it records `skipped: paused` until resumed",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: { params: LoopParam, body: ReasonBody },
  responses: {
    200: { description: "The loop after the change", content: { "application/json": { schema: LoopState } } },
    ...ERRORS,
  },
});

const deviceRoute = (action: "relist" | "reprobe", summary: string) =>
  createRoute({
    method: "post",
    path: `/v1/admin/devices/{id}/${action}`,
    summary,
    tags: ["admin"],
    security: [{ ApiKey: [] }],
    request: { params: DeviceParam },
    responses: {
      200: { description: "Done (audited)", content: { "application/json": { schema: DeviceState } } },
      ...ERRORS,
      404: errorResponse("E_NOT_FOUND: no such device (or modem exit, for reprobe)"),
    },
  });

const loopRoute = (action: "resume", summary: string) =>
  createRoute({
    method: "post",
    path: `/v1/admin/loops/{name}/${action}`,
    summary,
    tags: ["admin"],
    security: [{ ApiKey: [] }],
    request: { params: LoopParam },
    responses: {
      200: {
        description: "The loop after the change",
        content: { "application/json": { schema: LoopState } },
      },
      ...ERRORS,
    },
  });

const listLoops = createRoute({
  method: "get",
  path: "/v1/admin/loops",
  summary: "Every autonomous loop and whether it is paused (and whether the kill switch stops them all)",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  responses: {
    200: {
      description: "Loops",
      content: {
        "application/json": {
          schema: z.object({ killSwitch: z.boolean(), loops: z.array(LoopState) }).openapi("LoopList"),
        },
      },
    },
    401: ERRORS[401],
    403: ERRORS[403],
  },
});

/** Caps and the kill-switch rule, before the action runs. */
async function admit(c: Context<AppEnv>, action: OpsAction): Promise<{ actor: string }> {
  const caller = callerOf(c);
  const deps = c.get("deps");
  const human = isHumanOperator(caller);
  // Engaged, an ops-agent may only move further in the safe direction.
  if (!human && (action === "relist" || action === "reprobe" || action === "resume")) {
    if (await deps.redis.get(keys.killSwitch()))
      throw new ApiError(
        "E_CONFLICT",
        `the kill switch is engaged: an ops-agent may delist and pause, not ${action}; a human operator decides`,
      );
  }
  await spendOpsCap(deps, { apiKeyId: caller.apiKeyId, human }, action);
  return { actor: caller.apiKeyId };
}

export function registerAdminOpsActions(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  for (const path of ["/v1/admin/devices/*", "/v1/admin/loops", "/v1/admin/loops/*"])
    app.use(path, async (c, next) => {
      await requireOperatorOrAgent(c, "operations actions");
      await next();
    });

  const deviceOr404 = async (c: Context<AppEnv>, id: string, modemsToo: boolean) => {
    const kind = await exitKind(c.get("deps").db, id);
    if (!kind || (kind === "modem" && !modemsToo))
      throw new ApiError(
        "E_NOT_FOUND",
        kind === "modem"
          ? `${id} is a modem exit: list or remove it with /v1/admin/modem-exits`
          : `no device ${id}`,
      );
  };

  app.openapi(delistRoute, async (c) => {
    const { id } = c.req.valid("param");
    await deviceOr404(c, id, false);
    const { actor } = await admit(c, "delist");
    await delistDevice(c.get("deps"), actor, id, c.req.valid("json")?.reason);
    c.header("Cache-Control", "no-store");
    return c.json({ id, delisted: true }, 200);
  });

  app.openapi(
    deviceRoute("relist", "Lift an operations delist; the listing cron lists it again if it qualifies"),
    async (c) => {
      const { id } = c.req.valid("param");
      await deviceOr404(c, id, false);
      const { actor } = await admit(c, "relist");
      await relistDevice(c.get("deps"), actor, id);
      c.header("Cache-Control", "no-store");
      return c.json({ id, delisted: false }, 200);
    },
  );

  app.openapi(deviceRoute("reprobe", "Probe a device or modem exit on the prober's next tick"), async (c) => {
    const { id } = c.req.valid("param");
    await deviceOr404(c, id, true);
    const { actor } = await admit(c, "reprobe");
    await reprobe(c.get("deps"), actor, id);
    c.header("Cache-Control", "no-store");
    return c.json({ id, probeDue: true }, 200);
  });

  app.openapi(listLoops, async (c) => {
    const redis = c.get("deps").redis;
    const loops = await Promise.all(
      LOOPS.map(async (name) => {
        const v = await redis.get(keys.loopPaused(name));
        return { name, paused: Boolean(v), since: v ? String(v) : null };
      }),
    );
    c.header("Cache-Control", "no-store");
    return c.json({ killSwitch: Boolean(await redis.get(keys.killSwitch())), loops }, 200);
  });

  app.openapi(pauseRoute, async (c) => {
    const { name } = c.req.valid("param");
    const { actor } = await admit(c, "pause");
    const state = await setLoopPaused(c.get("deps"), {
      actor,
      loop: name,
      paused: true,
      reason: c.req.valid("json")?.reason,
    });
    c.header("Cache-Control", "no-store");
    return c.json({ name, ...state }, 200);
  });

  app.openapi(loopRoute("resume", "Resume a paused loop"), async (c) => {
    const { name } = c.req.valid("param");
    const { actor } = await admit(c, "resume");
    const state = await setLoopPaused(c.get("deps"), { actor, loop: name, paused: false });
    c.header("Cache-Control", "no-store");
    return c.json({ name, ...state }, 200);
  });
}
