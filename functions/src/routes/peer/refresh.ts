import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { refreshIdentity } from "../../services/devices.ts";
import { clientInfo, fail, limitByIp } from "./common.ts";

const Params = z.object({
  deviceId: z.string().regex(/^agent_[0-9a-f]{16}$/, "deviceId must be agent_ + 16 hex"),
});
const Body = z.object({ refreshToken: z.string().min(1) }).openapi("PeerRefresh");
const relay = z.string().openapi({
  description:
    "The relay the device should be connected to now: its region's, or the next region's while that one is down. A device that cannot reach its current relay switches to this one when it differs (docs/protocol.md)",
  example: "wss://relay-us.peerproxy.dev",
});

const tokenRoute = createRoute({
  method: "post",
  path: "/v1/peer/token/{deviceId}/refresh",
  summary: "New JWT from a refresh token (the refresh token stays valid)",
  tags: ["peer"],
  request: { params: Params, body: { content: { "application/json": { schema: Body } }, required: true } },
  responses: {
    200: {
      description: "New JWT",
      content: { "application/json": { schema: z.object({ token: z.string(), jwt: z.string(), relay }) } },
    },
    401: {
      description:
        "Refresh token unknown, expired, used, revoked by a re-registration, or its device's API key was revoked",
    },
    429: { description: "Rate limited" },
  },
});

const agentRoute = createRoute({
  method: "post",
  path: "/v1/peer/agents/{deviceId}/refresh",
  summary: "New JWT and a rotated refresh token (the presented one is spent)",
  tags: ["peer"],
  request: { params: Params, body: { content: { "application/json": { schema: Body } }, required: true } },
  responses: {
    200: {
      description: "New JWT and refresh token",
      content: {
        "application/json": {
          schema: z.object({ token: z.string(), jwt: z.string(), refreshToken: z.string(), relay }),
        },
      },
    },
    401: {
      description:
        "Refresh token unknown, expired, used, revoked by a re-registration, or its device's API key was revoked",
    },
    429: { description: "Rate limited" },
  },
});

export function registerPeerRefresh(app: OpenAPIHono<AppEnv>) {
  app.openapi(tokenRoute, async (c) => {
    await limitByIp(c, "refresh");
    const r = await refreshIdentity(
      c.get("deps"),
      c.req.valid("param").deviceId,
      c.req.valid("json").refreshToken,
      false,
      clientInfo(c),
    );
    if (!r.ok) return fail(r);
    return c.json({ token: r.jwt, jwt: r.jwt, relay: r.relay }, 200);
  });
  app.openapi(agentRoute, async (c) => {
    await limitByIp(c, "refresh");
    const r = await refreshIdentity(
      c.get("deps"),
      c.req.valid("param").deviceId,
      c.req.valid("json").refreshToken,
      true,
      clientInfo(c),
    );
    if (!r.ok) return fail(r);
    return c.json({ token: r.jwt, jwt: r.jwt, refreshToken: r.refreshToken!, relay: r.relay }, 200);
  });
}
