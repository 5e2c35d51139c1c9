import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { registerDevice, tokenForOwner } from "../../services/devices.ts";
import { clientInfo, fail, limitByIp } from "./common.ts";
import { peerText, walletAddress } from "./register.ts";

// The Android SDK's shape: key in X-API-Key, name under one of several fields.
const Body = z
  .object({
    name: peerText(64).min(1).optional(),
    deviceName: peerText(64).min(1).optional(),
    deviceId: peerText(64)
      .min(1)
      .optional()
      .openapi({ description: "Client-side id, used as the name if no name" }),
    type: peerText(32).default("android"),
    sdkVersion: peerText(32).optional(),
    walletAddress: walletAddress.optional(),
    country: z
      .string()
      .regex(/^[A-Za-z]{2}$/, "country must be ISO-2")
      .optional(),
    carrier: peerText(64).optional(),
    connectionMethod: peerText(32).optional(),
  })
  .refine((b) => b.name ?? b.deviceName ?? b.deviceId, {
    message: "one of name, deviceName or deviceId is required",
    path: ["name"],
  })
  // The refinement above, as the document states it.
  .openapi("PeerRegisterAndroid", {
    anyOf: [{ required: ["name"] }, { required: ["deviceName"] }, { required: ["deviceId"] }],
  });

const Headers = z.object({
  "x-api-key": z.string().min(1, "X-API-Key header is required").openapi({ description: "psx_ key" }),
});

const registerRoute = createRoute({
  method: "post",
  path: "/v1/peer/register",
  summary: "Register a device (Android SDK shape)",
  tags: ["peer"],
  request: { headers: Headers, body: { content: { "application/json": { schema: Body } }, required: true } },
  responses: {
    200: {
      description: "Device identity",
      content: {
        "application/json": {
          schema: z.object({
            device: z.object({ deviceId: z.string(), ipType: z.string() }),
            token: z.string(),
            jwt: z.string(),
            refreshToken: z.string(),
            relay: z.string(),
            earningsPerGB: z.record(z.string(), z.string()),
          }),
        },
      },
    },
    401: { description: "X-API-Key missing or unknown" },
    403: { description: "E_SCOPE_REQUIRED (the key lacks `supply`), E_DEVICE_LIMIT or E_UNPROVEN_LIMIT" },
    429: { description: "Rate limited" },
  },
});

const tokenRoute = createRoute({
  method: "get",
  path: "/v1/peer/token/{deviceId}",
  summary: "A fresh JWT for one of the caller's devices",
  tags: ["peer"],
  request: { headers: Headers, params: z.object({ deviceId: z.string().regex(/^agent_[0-9a-f]{16}$/) }) },
  responses: {
    200: { description: "JWT", content: { "application/json": { schema: z.object({ token: z.string() }) } } },
    401: { description: "X-API-Key missing or unknown" },
    403: { description: "E_SCOPE_REQUIRED: the key lacks `supply`" },
    404: { description: "Not this account's device" },
  },
});

export function registerPeerAndroid(app: OpenAPIHono<AppEnv>) {
  app.openapi(registerRoute, async (c) => {
    await limitByIp(c, "register");
    const b = c.req.valid("json");
    const result = await registerDevice(
      c.get("deps"),
      { ...b, apiKey: c.req.valid("header")["x-api-key"], name: (b.name ?? b.deviceName ?? b.deviceId)! },
      clientInfo(c),
    );
    if (!result.ok) return fail(result);
    return c.json(
      {
        device: { deviceId: result.deviceId, ipType: result.ipType },
        token: result.jwt,
        jwt: result.jwt,
        refreshToken: result.refreshToken,
        relay: result.relay,
        earningsPerGB: result.earningsPerGB,
      },
      200,
    );
  });
  app.openapi(tokenRoute, async (c) => {
    await limitByIp(c, "refresh");
    const r = await tokenForOwner(
      c.get("deps"),
      c.req.valid("header")["x-api-key"],
      c.req.valid("param").deviceId,
      clientInfo(c),
    );
    if (!r.ok) return fail(r);
    return c.json({ token: r.jwt }, 200);
  });
}
