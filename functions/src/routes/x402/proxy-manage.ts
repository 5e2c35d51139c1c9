/** /v1/x402/manage/proxy/*: what a dedicated-port renter does with its X-Session-Token. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { reservationOfCredential } from "../../services/modem-reservations.ts";
import { lastRotation, requestRotation } from "../../services/modem-rotation.ts";
import { creditOf } from "./answers.ts";
import {
  type AuthedSession,
  enforceRateLimit,
  requireReadableBody,
  requireSession,
  usedOf,
} from "./guards.ts";
import {
  DedicatedAccess,
  dedicatedAccessBody,
  MANAGE_PROXY,
  Reservation,
  Rotation,
  requireDedicatedPricing,
  reservationView,
  rotationView,
} from "./proxy.ts";
import { Credit, errorResponse, SessionHeaders, TAG } from "./schemas.ts";
import { registerSessionRoutes, SESSION_ERRORS } from "./session.ts";

const StatusBody = z
  .object({
    username: z.string(),
    credit: Credit,
    reservation: Reservation.nullable(),
    rotation: Rotation.extend({
      last: z.object({ id: z.string(), status: z.string(), requestedAt: z.string() }).nullable(),
    }),
    sessionExpiresAt: z.string(),
  })
  .openapi("X402DedicatedStatus");

const status = createRoute({
  method: "get",
  path: `${MANAGE_PROXY}/status`,
  summary: "The reservation (until when), remaining traffic and rotation state of a dedicated port",
  tags: [TAG],
  request: { headers: SessionHeaders },
  responses: {
    200: { description: "Status", content: { "application/json": { schema: StatusBody } } },
    ...SESSION_ERRORS,
  },
});

const RotationAccepted = z
  .object({
    rotationId: z.string().openapi({ example: "mrot_0a1b2c3d4e5f6a7b8c9d0e1f" }),
    status: z.literal("accepted"),
    requestedAt: z.string(),
    note: z.string(),
  })
  .openapi("X402RotationAccepted");

const rotate = createRoute({
  method: "post",
  path: `${MANAGE_PROXY}/rotate`,
  summary:
    "Ask the dedicated modem to re-dial for a new carrier IP (rate limited, see rotation.minIntervalSeconds)",
  tags: [TAG],
  request: { headers: SessionHeaders },
  responses: {
    202: {
      description: "The modem's rotation webhook accepted the request; the new IP follows within seconds",
      content: { "application/json": { schema: RotationAccepted } },
    },
    ...SESSION_ERRORS,
    409: errorResponse(
      "E_CONFLICT: the reservation has ended, or the session bought pool access (use /v1/x402/manage/pool)",
    ),
    429: errorResponse("Rate limited: one rotation per rotation.minIntervalSeconds"),
    501: errorResponse(
      "E_ROTATION_UNAVAILABLE: this modem has no rotation webhook configured by its operator",
    ),
    503: errorResponse("E_UNAVAILABLE: the modem's rotation webhook failed or did not answer; retry later"),
  },
});

async function access(c: Context<AppEnv>, s: AuthedSession, secret: string) {
  const deps = c.get("deps");
  return dedicatedAccessBody(c, {
    ...s,
    secret,
    sessionToken: s.token,
    reservation: await reservationOfCredential(deps.db, s.credential.id),
    usedBytes: await usedOf(c, s.credential.id),
    pricing: await requireDedicatedPricing(c),
  });
}

export function registerX402ProxyManage(app: OpenAPIHono<AppEnv>) {
  app.openapi(status, async (c) => {
    const s = await requireSession(c, "proxy");
    const deps = c.get("deps");
    const pricing = await requireDedicatedPricing(c);
    const reservation = await reservationOfCredential(deps.db, s.credential.id);
    c.header("Cache-Control", "no-store");
    return c.json(
      {
        username: s.session.username,
        credit: creditOf(s.credential, await usedOf(c, s.credential.id)),
        reservation: reservationView(reservation, deps.now()),
        rotation: {
          ...rotationView(reservation, pricing),
          last: reservation ? await lastRotation(deps.db, reservation.id) : null,
        },
        sessionExpiresAt: new Date(s.session.expires_at).toISOString(),
      },
      200,
    );
  });

  registerSessionRoutes(app, {
    product: "proxy",
    base: MANAGE_PROXY,
    Access: DedicatedAccess,
    connectionSummary: "Re-emit the dedicated port's credentials (recovery)",
    access,
  });

  app.openapi(rotate, async (c) => {
    await requireReadableBody(c);
    const s = await requireSession(c, "proxy");
    const deps = c.get("deps");
    const pricing = await requireDedicatedPricing(c);
    const interval = pricing.rotationMinIntervalSeconds;
    await enforceRateLimit(c, "x402_rotate", s.session.id, 1, interval * 1000);
    const result = await requestRotation(
      { db: deps.db, now: deps.now, fetch: (input, init) => fetch(input, init) },
      { credentialId: s.credential.id, actor: `x402:${s.session.id}` },
    );
    c.header("Cache-Control", "no-store");
    if (result.kind === "not_reserved")
      throw new ApiError(
        "E_CONFLICT",
        `this dedicated port's reservation has ended${result.endedAt ? ` (${result.endedAt.toISOString()})` : ""}; buy a new one at /v1/x402/proxy`,
      );
    if (result.kind === "no_webhook")
      throw new ApiError(
        "E_ROTATION_UNAVAILABLE",
        "this modem cannot rotate on demand: its operator configured no rotation webhook (rotation.available is false); its IP changes when the carrier re-issues it",
      );
    if (result.kind === "failed")
      throw new ApiError(
        "E_UNAVAILABLE",
        `rotation ${result.rotationId} failed: ${result.reason}; retry later`,
        {
          details: { rotationId: result.rotationId, httpStatus: result.httpStatus },
          headers: { "Retry-After": String(interval) },
        },
      );
    return c.json(
      {
        rotationId: result.rotationId,
        status: "accepted" as const,
        requestedAt: result.requestedAt.toISOString(),
        note: "the modem re-dials: connections open now drop, and the new carrier IP is usually live within 10-30 s",
      },
      202,
    );
  });
}
