/** DELETE /v1/admin/api-keys/{keyId}: revoke a key at once, with the devices it registered. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { revokeApiKey } from "../../services/accounts.ts";
import { ApiKeyInfo, apiKeyView, KeyIdParam } from "../account/common.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { OPERATOR_ERRORS } from "./accounts.ts";
import { requireOperatorKey } from "./common.ts";

const route = createRoute({
  method: "delete",
  path: "/v1/admin/api-keys/{keyId}",
  summary:
    "Revoke an API key now: it stops authenticating, and the devices it registered lose their tokens and relay sockets",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: { params: KeyIdParam },
  responses: {
    200: {
      description: "Revoked (repeating it is harmless and re-announces the devices' revocation)",
      content: {
        "application/json": {
          schema: ApiKeyInfo.extend({
            devicesRevoked: z.number().int().openapi({ description: "devices registered with this key" }),
          }).openapi("ApiKeyRevoked"),
        },
      },
    },
    ...OPERATOR_ERRORS,
    404: errorResponse("No such API key"),
    503: errorResponse("Revoked in Postgres, but the relays were not told: retry the DELETE"),
  },
});

export function registerAdminApiKey(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  app.use("/v1/admin/api-keys/*", async (c, next) => {
    await requireOperatorKey(c, "API keys");
    await next();
  });

  app.openapi(route, async (c) => {
    const { keyId } = c.req.valid("param");
    const deps = c.get("deps");
    let revoked: Awaited<ReturnType<typeof revokeApiKey>>;
    try {
      revoked = await revokeApiKey({ deps, input: { actor: callerOf(c).accountId, keyId } });
    } catch (err) {
      if (err instanceof ApiError) throw err;
      // The key is revoked once Postgres committed; only telling the relays can have failed.
      console.error(
        JSON.stringify({
          level: "error",
          requestId: c.get("requestId"),
          msg: "api key revocation: relay announcement failed",
          keyId,
          error: String((err as Error)?.message ?? err).slice(0, 200),
        }),
      );
      throw new ApiError("E_UNAVAILABLE", "the key may be revoked, but the relays were not told; retry", {
        headers: { "Retry-After": "1" },
      });
    }
    if (!revoked) throw new ApiError("E_NOT_FOUND", `no API key ${keyId}`);
    c.header("Cache-Control", "no-store");
    return c.json({ ...apiKeyView(revoked.key, deps.now()), devicesRevoked: revoked.devicesRevoked }, 200);
  });
}
