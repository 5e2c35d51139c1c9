/** POST /v1/account/api-keys/{keyId}/rotate: an account replaces one of its own keys. */
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { ROTATION_GRACE_MS, rotateApiKey } from "../../services/accounts.ts";
import { authenticateApiKey } from "../../services/auth.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { ApiKeyInfo, ApiKeyWithSecret, apiKeyView, KeyIdParam } from "./common.ts";

const GRACE_HOURS = ROTATION_GRACE_MS / 3_600_000;

const route = createRoute({
  method: "post",
  path: "/v1/account/api-keys/{keyId}/rotate",
  summary: `Replace one of this account's keys: a new secret with the same scopes; the old one works ${GRACE_HOURS} h more`,
  description:
    "Authenticate with any live key of the account that holds every scope of the key being rotated (usually the key itself). " +
    "Each key rotates once; rotate the new key next time.",
  tags: ["account"],
  security: [{ ApiKey: [] }],
  request: { params: KeyIdParam },
  responses: {
    200: {
      description: "The new key (its secret shown only here) and the old key with its expiry",
      content: {
        "application/json": {
          schema: ApiKeyWithSecret.extend({ replaces: ApiKeyInfo }).openapi("ApiKeyRotated"),
        },
      },
    },
    400: errorResponse("Invalid input; the message names the field"),
    401: errorResponse("Missing, unknown, revoked or expired X-API-Key"),
    403: errorResponse("E_SCOPE_REQUIRED: the calling key lacks a scope the rotated key has"),
    404: errorResponse("No live key with that id on this account"),
    409: errorResponse("E_CONFLICT: that key was already rotated; rotate its successor"),
  },
});

export function registerAccountApiKeyRotate(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  app.use("/v1/account/api-keys/*", async (c, next) => {
    const account = await authenticateApiKey(c.get("deps"), c.req.header("x-api-key"));
    if (!account)
      throw new ApiError("E_UNAUTHORIZED", "X-API-Key is missing or not a valid API key (psx_...)");
    c.set("caller", account);
    await next();
  });

  app.openapi(route, async (c) => {
    const { keyId } = c.req.valid("param");
    const deps = c.get("deps");
    const r = await rotateApiKey({ deps, input: { caller: callerOf(c), keyId } });
    if (!r.ok) throw new ApiError(r.code, r.message, r.details ? { details: r.details } : {});
    c.header("Cache-Control", "no-store");
    return c.json(
      { ...apiKeyView(r.key, deps.now()), apiKey: r.apiKey, replaces: apiKeyView(r.oldKey, deps.now()) },
      200,
    );
  });
}
