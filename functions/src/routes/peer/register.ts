import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { registerDevice } from "../../services/devices.ts";
import { clientInfo, fail, limitByIp } from "./common.ts";

/** An EVM address (0x + 40 hex) or a Solana one (base58, 32-44 chars). */
const WALLET = /^(?:0x[0-9a-fA-F]{40}|[1-9A-HJ-NP-Za-km-z]{32,44})$/;

// Checks as zod string formats (not refinements) so /openapi.json carries them: a client that
// follows the document never sends what the route refuses.
export const walletAddress = z
  .string()
  .min(1, "walletAddress must not be empty: omit it or give an EVM (0x...) or Solana address")
  .regex(WALLET, "walletAddress must be an EVM (0x + 40 hex) or Solana (base58) address");

/** Free text that Postgres can store: any character but NUL (a text column refuses it). */
export const peerText = (max: number) =>
  z
    .string()
    .max(max)
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing NUL is the point
    .regex(/^[^\x00]*$/, "must not contain NUL characters");

export const RegisterBody = z
  .object({
    name: peerText(64)
      .min(1)
      .openapi({ description: "Stable per instance: same apiKey + name = same device" }),
    apiKey: z
      .string()
      .regex(/^psx_/, "apiKey must start with psx_")
      .openapi({ description: "Account API key" }),
    type: peerText(32).min(1).default("custom"),
    connectionMethod: peerText(32).optional(),
    sdkVersion: peerText(32).optional(),
    walletAddress: walletAddress.optional(),
    country: z
      .string()
      .regex(/^[A-Za-z]{2}$/, "country must be ISO-2")
      .optional()
      .openapi({ description: "Hint only" }),
    carrier: peerText(64).optional(),
  })
  .openapi("PeerRegister");

export const Identity = z
  .object({
    deviceId: z.string().openapi({ example: "agent_0123456789abcdef" }),
    token: z.string(),
    jwt: z.string().openapi({ description: "Same JWT as token; expires in 1 h" }),
    refreshToken: z.string().openapi({ description: "Opaque, 7 days; persist it in the peer state file" }),
    relay: z.string().openapi({ description: "ws/wss URL chosen server-side" }),
    earningsPerGB: z
      .record(z.string(), z.string())
      .openapi({ description: "Live USD rates by IP class (decimal strings)" }),
    ipType: z.enum(["mobile", "residential", "datacenter"]),
    expiresIn: z.number(),
  })
  .openapi("PeerIdentity");

const route = createRoute({
  method: "post",
  path: "/v1/peer/agents/register",
  summary: "Register a peer device (idempotent per apiKey + name)",
  tags: ["peer"],
  request: { body: { content: { "application/json": { schema: RegisterBody } }, required: true } },
  responses: {
    200: { description: "Device identity", content: { "application/json": { schema: Identity } } },
    400: { description: "Invalid body (names the field)" },
    401: { description: "apiKey missing or unknown" },
    403: { description: "E_SCOPE_REQUIRED (the key lacks `supply`), E_DEVICE_LIMIT or E_UNPROVEN_LIMIT" },
    429: { description: "Rate limited per IP (Retry-After)" },
  },
});

export function registerPeerRegister(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    await limitByIp(c, "register");
    const result = await registerDevice(c.get("deps"), c.req.valid("json"), clientInfo(c));
    if (!result.ok) return fail(result);
    const { ok: _ok, accountId: _acct, jwt, ...rest } = result;
    return c.json({ ...rest, token: jwt, jwt }, 200);
  });
}
