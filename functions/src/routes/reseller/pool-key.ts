/** GET, PATCH and DELETE /v1/reseller/pool-keys/{id}. */

import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import {
  deleteCredential,
  getCredential,
  syncCredentialMirror,
  updateCredential,
  wasDeleted,
  withUsage,
} from "../../services/credentials.ts";
import { checkMaxConnections, resellLimits } from "../../services/resell-limits.ts";
import { callerOf } from "../api-key.ts";
import {
  changeKey,
  IdParam,
  idempotentWrite,
  KEY_ERRORS,
  LIMIT_ERRORS,
  limitError,
  notFound,
  PoolKey,
  registerResellerAuth,
  SECURITY,
  TAG,
  WRITE_ERRORS,
  WriteHeaders,
} from "./common.ts";

const getKey = createRoute({
  method: "get",
  path: "/v1/reseller/pool-keys/{id}",
  summary: "One pool access key with its live used bytes",
  tags: [TAG],
  security: SECURITY,
  request: { params: IdParam },
  responses: {
    200: { description: "The key", content: { "application/json": { schema: PoolKey } } },
    ...KEY_ERRORS,
  },
});

const PatchBody = z
  .object({
    name: z.string().max(100).optional(),
    enabled: z
      .boolean()
      .optional()
      .openapi({ description: "false disables the key; true cannot lift a cap suspension" }),
    expiresAt: z.iso
      .datetime({ offset: true })
      .nullable()
      .optional()
      .openapi({ description: "null = never" }),
    maxConnections: z.number().int().min(1).max(10_000).optional(),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, { message: "must change at least one field" })
  .refine((b) => !b.expiresAt || Date.parse(b.expiresAt) > Date.now(), {
    message: "must be in the future",
    path: ["expiresAt"],
  })
  // The first refinement as the document states it (the second depends on the clock).
  .openapi("PoolKeyPatch", { minProperties: 1 });

const patchKey = createRoute({
  method: "patch",
  path: "/v1/reseller/pool-keys/{id}",
  summary: "Rename, enable/disable, change expiry or connection limit",
  tags: [TAG],
  security: SECURITY,
  request: {
    params: IdParam,
    headers: WriteHeaders,
    body: { required: true, content: { "application/json": { schema: PatchBody } } },
  },
  responses: {
    200: { description: "The updated key", content: { "application/json": { schema: PoolKey } } },
    ...KEY_ERRORS,
    ...LIMIT_ERRORS,
    ...WRITE_ERRORS,
  },
});

const deleteKey = createRoute({
  method: "delete",
  path: "/v1/reseller/pool-keys/{id}",
  summary: "Delete a key: its secret stops working at the gateway at once",
  tags: [TAG],
  security: SECURITY,
  request: { params: IdParam, headers: WriteHeaders },
  responses: {
    200: {
      description: "Deleted",
      content: {
        "application/json": {
          schema: z.object({ id: z.string(), deleted: z.literal(true) }).openapi("PoolKeyDeleted"),
        },
      },
    },
    ...KEY_ERRORS,
    ...WRITE_ERRORS,
  },
});

export function registerPoolKey(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app);
  app.openapi(getKey, async (c) => {
    const account = callerOf(c);
    const { id } = c.req.valid("param");
    const deps = c.get("deps");
    const row = await getCredential(deps.db, account.accountId, id);
    if (!row) throw notFound(id);
    const [key] = await withUsage(deps.redis, [row]);
    c.header("Cache-Control", "no-store");
    return c.json(key!, 200);
  });

  app.openapi(patchKey, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    return changeKey(c, id, body, async (key) => {
      if (body.maxConnections !== undefined) {
        const limits = await resellLimits(key.deps.db, key.input.accountId);
        const tooMany = checkMaxConnections(limits, body.maxConnections);
        if (tooMany) throw limitError(tooMany);
      }
      const credential = await updateCredential({
        deps: key.deps,
        input: {
          ...key.input,
          patch: {
            name: body.name,
            enabled: body.enabled,
            expiresAt:
              body.expiresAt === undefined ? undefined : body.expiresAt ? new Date(body.expiresAt) : null,
            maxConnections: body.maxConnections,
          },
        },
      });
      return credential && { credential };
    });
  });

  app.openapi(deleteKey, async (c) => {
    const account = callerOf(c);
    const { id } = c.req.valid("param");
    const deps = c.get("deps");
    return idempotentWrite(c, account, {}, async (tx) => {
      const row = await deleteCredential({
        deps: { db: tx, now: deps.now },
        input: { accountId: account.accountId, actor: account.accountId, keyId: id },
      });
      if (!row) {
        // A retry after a 503 finds the key already deleted: still make sure Redis forgot it.
        if (await wasDeleted(tx, account.accountId, id)) await syncCredentialMirror(deps, id);
        throw notFound(id);
      }
      return { status: 200, body: { id: row.id, deleted: true }, subject: row.id };
    });
  });
}
