/** POST /v1/reseller/pool-keys/{id}/topup: more bytes; re-enables a key suspended at its cap. */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import { topupCredential } from "../../services/credentials.ts";
import { drawResellBytes } from "../../services/resell-limits.ts";
import {
  changeKey,
  IdParam,
  KEY_ERRORS,
  LIMIT_ERRORS,
  limitError,
  MAX_BYTES,
  PoolKey,
  registerResellerAuth,
  SECURITY,
  TAG,
  WRITE_ERRORS,
  WriteHeaders,
} from "./common.ts";

const TopupBody = z
  .object({
    addBytes: z.number().int().min(1).max(MAX_BYTES).openapi({ example: 1_073_741_824 }),
  })
  .openapi("PoolKeyTopup");

const topupKey = createRoute({
  method: "post",
  path: "/v1/reseller/pool-keys/{id}/topup",
  summary: "Add bytes to a key's cap; a key suspended at its cap works again at once",
  tags: [TAG],
  security: SECURITY,
  request: {
    params: IdParam,
    headers: WriteHeaders,
    body: { required: true, content: { "application/json": { schema: TopupBody } } },
  },
  responses: {
    200: { description: "The key with its new cap", content: { "application/json": { schema: PoolKey } } },
    ...KEY_ERRORS,
    ...LIMIT_ERRORS,
    ...WRITE_ERRORS,
  },
});

export function registerPoolKeyTopup(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app);
  app.openapi(topupKey, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    return changeKey(c, id, body, async (key) => {
      // Same transaction as the topup: a 404 or a failed write gives the bytes back.
      const drawn = await drawResellBytes(key.deps.db, key.input.accountId, body.addBytes);
      if (!drawn.ok) throw limitError(drawn);
      const credential = await topupCredential({
        deps: key.deps,
        input: { ...key.input, addBytes: body.addBytes },
      });
      return credential && { credential };
    });
  });
}
