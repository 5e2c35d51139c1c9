/** POST /v1/reseller/pool-keys (create) and GET /v1/reseller/pool-keys (list). */

import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env.ts";
import {
  DEFAULT_MAX_CONNECTIONS,
  listCredentials,
  mintCredential,
  toPoolKey,
  withUsage,
} from "../../services/credentials.ts";
import { checkMaxConnections, drawResellBytes, resellLimits } from "../../services/resell-limits.ts";
import { callerOf } from "../api-key.ts";
import {
  COMMON_ERRORS,
  idempotentWrite,
  LIMIT_ERRORS,
  limitError,
  MAX_BYTES,
  PoolKey,
  PoolKeyWithSecret,
  registerResellerAuth,
  SECURITY,
  TAG,
  WRITE_ERRORS,
  WriteHeaders,
} from "./common.ts";

const Tier = z.enum(["mbl", "peer", "any"]);

const CreateBody = z
  .object({
    name: z.string().max(100).optional(),
    tier: Tier.default("any").openapi({ description: "quality contract; `mbl` keys always route to `mbl`" }),
    pool: Tier.optional().openapi({ description: "username default; defaults to the tier" }),
    country: z
      .string()
      .toLowerCase()
      .regex(/^([a-z]{2}|any)$/, "must be an ISO-2 country code or any")
      .default("any"),
    capBytes: z.number().int().min(1).max(MAX_BYTES).openapi({ example: 5_368_709_120 }),
    expiresAt: z.iso.datetime({ offset: true }).nullable().optional(),
    maxConnections: z.number().int().min(1).max(10_000).optional(),
  })
  .superRefine((b, ctx) => {
    if (b.pool && b.tier !== "any" && b.pool !== b.tier) {
      ctx.addIssue({ code: "custom", path: ["pool"], message: `must be ${b.tier} for a ${b.tier} key` });
    }
    if (b.expiresAt && Date.parse(b.expiresAt) <= Date.now()) {
      ctx.addIssue({ code: "custom", path: ["expiresAt"], message: "must be in the future" });
    }
  })
  .openapi("PoolKeyCreate");

const createKey = createRoute({
  method: "post",
  path: "/v1/reseller/pool-keys",
  summary: "Create a pool access key; its pak_ secret is shown only in this response",
  tags: [TAG],
  security: SECURITY,
  request: {
    headers: WriteHeaders,
    body: { required: true, content: { "application/json": { schema: CreateBody } } },
  },
  responses: {
    201: { description: "Created", content: { "application/json": { schema: PoolKeyWithSecret } } },
    ...COMMON_ERRORS,
    ...LIMIT_ERRORS,
    ...WRITE_ERRORS,
  },
});

const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  after: z
    .string()
    .regex(/^pk_[0-9a-f]{24}$/, "must be a pool key id (pk_...)")
    .optional()
    .openapi({ description: "the last id of the previous page" }),
});

const listKeys = createRoute({
  method: "get",
  path: "/v1/reseller/pool-keys",
  summary: "List this account's pool access keys, oldest first",
  tags: [TAG],
  security: SECURITY,
  request: { query: ListQuery },
  responses: {
    200: {
      description: "A page of keys",
      content: {
        "application/json": {
          schema: z
            .object({ keys: z.array(PoolKey), nextAfter: z.string().nullable() })
            .openapi("PoolKeyPage"),
        },
      },
    },
    ...COMMON_ERRORS,
  },
});

export function registerPoolKeys(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app);

  app.openapi(createKey, async (c) => {
    const account = callerOf(c);
    const body = c.req.valid("json");
    const deps = c.get("deps");
    return idempotentWrite(c, account, body, async (tx) => {
      const limits = await resellLimits(tx, account.accountId);
      const maxConnections = body.maxConnections ?? Math.min(DEFAULT_MAX_CONNECTIONS, limits.maxConnections);
      const tooMany = checkMaxConnections(limits, maxConnections);
      if (tooMany) throw limitError(tooMany);
      const drawn = await drawResellBytes(tx, account.accountId, body.capBytes);
      if (!drawn.ok) throw limitError(drawn);
      const minted = await mintCredential({
        deps: { db: tx, now: deps.now },
        input: {
          accountId: account.accountId,
          actor: account.accountId,
          name: body.name,
          tier: body.tier,
          pool: body.pool,
          country: body.country,
          capBytes: body.capBytes,
          expiresAt: body.expiresAt ? new Date(body.expiresAt) : null,
          maxConnections,
        },
      });
      if (!minted) throw new Error(`account ${account.accountId} vanished mid-request`);
      return {
        status: 201,
        body: { ...toPoolKey(minted.credential, 0), secret: minted.secret },
        subject: minted.credential.id,
      };
    });
  });

  app.openapi(listKeys, async (c) => {
    const account = callerOf(c);
    const { limit, after } = c.req.valid("query");
    const deps = c.get("deps");
    const rows = await listCredentials(deps.db, account.accountId, { limit, after });
    const keys = await withUsage(deps.redis, rows);
    c.header("Cache-Control", "no-store");
    return c.json(
      { keys, nextAfter: rows.length === limit ? (rows[rows.length - 1]?.id ?? null) : null },
      200,
    );
  });
}
