/** POST /v1/reseller/pool-keys/{id}/regenerate: a new pak_ secret, same username. */
import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { regenerateCredential } from "../../services/credentials.ts";
import {
  changeKey,
  IdParam,
  KEY_ERRORS,
  PoolKeyWithSecret,
  registerResellerAuth,
  SECURITY,
  TAG,
  WRITE_ERRORS,
  WriteHeaders,
} from "./common.ts";

const regenerateKey = createRoute({
  method: "post",
  path: "/v1/reseller/pool-keys/{id}/regenerate",
  summary: "Replace a key's secret; the old one stops working at the gateway at once",
  tags: [TAG],
  security: SECURITY,
  request: { params: IdParam, headers: WriteHeaders },
  responses: {
    200: {
      description: "The key and its new secret (shown only here)",
      content: { "application/json": { schema: PoolKeyWithSecret } },
    },
    ...KEY_ERRORS,
    ...WRITE_ERRORS,
  },
});

export function registerPoolKeyRegenerate(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app);
  app.openapi(regenerateKey, async (c) => changeKey(c, c.req.valid("param").id, {}, regenerateCredential));
}
