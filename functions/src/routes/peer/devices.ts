/**
 * GET /v1/peer/devices (supply-scoped keys): the account's devices with their live state: online,
 * verified, listed for sale, speed tier, the last probe's result or failure code, bytes served.
 * The supplier page (/farmer) shows the same, from the same service.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { DEVICES_SHOWN, listSupplierDevices, type SupplierDevice } from "../../services/supplier-devices.ts";
import { callerOf, requireApiKey } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";

const Device = z
  .object({
    deviceId: z.string().openapi({ example: "agent_0a1b2c3d4e5f6a7b" }),
    name: z.string(),
    ipType: z.string().openapi({ description: "mobile, residential or datacenter (decided server-side)" }),
    online: z.boolean().openapi({ description: "connected to a relay now" }),
    country: z.string().nullable().openapi({ description: "ISO-2 the relay placed it in; null offline" }),
    verified: z.boolean().openapi({ description: "passed the prober's admission (two clean probes)" }),
    listed: z.boolean().openapi({ description: "for sale right now" }),
    speedTier: z.enum(["fast", "medium", "slow", "unknown"]),
    lastProbe: z
      .object({
        result: z.string().openapi({ description: '"ok" or the failure code (prober/README.md)' }),
        at: z.string(),
      })
      .nullable(),
    pausedReason: z.string().nullable().openapi({ description: "set while the circuit breaker holds it" }),
    bytesServed: z.string().regex(/^\d+$/).openapi({ description: "customer bytes served and accrued" }),
    registeredAt: z.string(),
  })
  .openapi("PeerDevice");

const route = createRoute({
  method: "get",
  path: "/v1/peer/devices",
  summary: `The account's devices and their live state, newest first (up to ${DEVICES_SHOWN})`,
  tags: ["peer"],
  security: [{ ApiKey: [] }],
  responses: {
    200: {
      description: "Devices",
      content: {
        "application/json": { schema: z.object({ devices: z.array(Device) }).openapi("PeerDeviceList") },
      },
    },
    401: errorResponse("Missing, unknown or revoked X-API-Key"),
    403: errorResponse("E_SCOPE_REQUIRED: the key lacks the `supply` scope"),
  },
});

const TIERS = new Set(["fast", "medium", "slow"]);
const view = (d: SupplierDevice) => ({
  deviceId: d.deviceId,
  name: d.name,
  ipType: d.ipType,
  online: d.online,
  country: d.country,
  verified: d.verified,
  listed: d.listed,
  speedTier: (TIERS.has(d.speedTier) ? d.speedTier : "unknown") as "fast" | "medium" | "slow" | "unknown",
  lastProbe: d.lastProbe ? { result: d.lastProbe.result, at: d.lastProbe.at.toISOString() } : null,
  pausedReason: d.pausedReason,
  bytesServed: String(d.bytesServed),
  registeredAt: d.registeredAt.toISOString(),
});

export function registerPeerDevices(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  app.use("/v1/peer/devices", async (c, next) => {
    await requireApiKey(c, ["supply"]);
    await next();
  });

  app.openapi(route, async (c) => {
    const deps = c.get("deps");
    const devices = await listSupplierDevices(deps, callerOf(c).accountId, deps.now());
    c.header("Cache-Control", "no-store");
    return c.json({ devices: devices.map(view) }, 200);
  });
}
