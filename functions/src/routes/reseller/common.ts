/** What the reseller routes share: the key schema, X-API-Key auth, and the idempotent write path. */
import { type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { readUsedBytes } from "../../../../shared/credentials.ts";
import type { Queryable } from "../../../../shared/db/pool.ts";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import type { ApiKeyAccount } from "../../services/auth.ts";
import {
  type CredentialRow,
  syncCredentialMirror,
  type TxDeps,
  toPoolKey,
} from "../../services/credentials.ts";
import { runIdempotent, type WriteOutcome } from "../../services/idempotency.ts";
import type { LimitFailure } from "../../services/resell-limits.ts";
import { callerOf, requireApiKey } from "../api-key.ts";
import { errorSchema } from "../errors.ts";

export const TAG = "reseller";
export const SECURITY = [{ ApiKey: [] }];

const appsWithAuth = new WeakSet<object>();

/**
 * X-API-Key auth for every /v1/reseller route, ahead of input validation so an unauthenticated
 * caller gets 401 and learns nothing about the schema; also registers the OpenAPI scheme.
 * Every reseller registerX calls it first, so the order of lines in createApp does not matter.
 */
export function registerResellerAuth(app: OpenAPIHono<AppEnv>) {
  if (appsWithAuth.has(app)) return;
  appsWithAuth.add(app);
  app.openAPIRegistry.registerComponent("securitySchemes", "ApiKey", {
    type: "apiKey",
    in: "header",
    name: "X-API-Key",
    description: "An account API key, `psx_...`",
  });
  app.use("/v1/reseller/*", async (c, next) => {
    // Pool keys are traffic: only keys an operator issued with `resell` mint or change them.
    await requireApiKey(c, ["resell"]);
    await next();
  });
}

export const MAX_BYTES = Number.MAX_SAFE_INTEGER;
const Bytes = z.number().int().nonnegative().max(MAX_BYTES);

export const PoolKey = z
  .object({
    id: z.string().openapi({ example: "pk_3f9a0c1b2d4e5f6a7b8c9d0e" }),
    name: z.string(),
    username: z.string().openapi({
      description: "`psx_<accountLabel>-<pool>-<country>`; add DSL tokens (sid, rot, ...) as needed",
      example: "psx_acme-mbl-us",
    }),
    accountLabel: z.string(),
    pool: z.enum(["mbl", "peer", "any"]),
    country: z.string(),
    tier: z
      .enum(["mbl", "peer", "any"])
      .openapi({ description: "quality contract: `mbl` keys always route to `mbl`" }),
    capBytes: Bytes.openapi({ description: "bytes, both directions; exact up to 2^53" }),
    usedBytes: Bytes.openapi({ description: "live from the gateway's meter" }),
    remainingBytes: Bytes,
    enabled: z.boolean(),
    suspendedReason: z.string().nullable().openapi({
      description:
        "`cap` (used up; topup re-enables), `disabled` (owner) or `expired` (a new expiresAt re-enables)",
    }),
    expiresAt: z.string().nullable(),
    maxConnections: z.number().int(),
    secretHint: z.string().openapi({ description: "first characters of the secret" }),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi("PoolKey");

export const PoolKeyWithSecret = PoolKey.extend({
  secret: z
    .string()
    .openapi({ description: "the `pak_` proxy password; shown only in this response", example: "pak_..." }),
}).openapi("PoolKeyWithSecret");

export const { ErrorBody, errorResponse } = errorSchema("Error");

export const COMMON_ERRORS = {
  400: errorResponse("Invalid input; the message names the field"),
  401: errorResponse("Missing, unknown or revoked X-API-Key"),
  403: errorResponse("E_SCOPE_REQUIRED: the key lacks the `resell` scope (details.requiredScope)"),
} as const;
/** Writes that sell bytes or connections: 403 also when the account's resell limits would be passed. */
export const LIMIT_ERRORS = {
  403: errorResponse(
    "E_SCOPE_REQUIRED: the key lacks the `resell` scope; E_RESELL_LIMIT: the account's lifetime allowance or per-key maxConnections would be passed (details names the limit)",
  ),
} as const;

export function limitError(f: LimitFailure): ApiError {
  return new ApiError(f.code, f.message, { details: f.details });
}

export const KEY_ERRORS = { ...COMMON_ERRORS, 404: errorResponse("No such key for this account") } as const;
export const WRITE_ERRORS = {
  409: errorResponse("E_IDEMPOTENCY_MISMATCH: this Idempotency-Key was used with a different request"),
  503: errorResponse("Saved, but the gateway cache was not updated: retry with the same Idempotency-Key"),
} as const;

export const IdParam = z.object({
  id: z
    .string()
    .regex(/^pk_[0-9a-f]{24}$/, "must be a pool key id (pk_...)")
    .openapi({ param: { name: "id", in: "path" }, example: "pk_3f9a0c1b2d4e5f6a7b8c9d0e" }),
});

export const WriteHeaders = z.object({
  "idempotency-key": z
    .string()
    .regex(/^[\x21-\x7e]{1,255}$/, "must be 1-255 visible ASCII characters")
    .optional()
    .openapi({
      param: { name: "idempotency-key", in: "header" },
      description: "Same key and body within 24 h: the same response. Same key, other body: 409.",
    }),
});

/** credused for one key; Redis down is a 503 before anything was written. */
export async function liveUsedBytes(c: Context<AppEnv>, keyId: string): Promise<number> {
  try {
    return (await readUsedBytes(c.get("deps").redis, [keyId])).get(keyId) ?? 0;
  } catch {
    throw new ApiError("E_UNAVAILABLE", "the gateway cache is unreachable; nothing was changed", {
      headers: { "Retry-After": "1" },
    });
  }
}

export function notFound(id: string): ApiError {
  return new ApiError("E_NOT_FOUND", `no pool key ${id} on this account`);
}

/** One key of the authenticated account, addressed as the credential services take it inside a write. */
export interface KeyChange {
  deps: TxDeps;
  input: { accountId: string; actor: string; keyId: string };
}

/**
 * The write path of a route that changes one existing key and answers with it: the key's live used
 * bytes are read first (Redis down is a 503 before anything is written), a key this account does not
 * have is a 404, and a new secret, when `change` made one, is part of the answer.
 */
export async function changeKey(
  c: Context<AppEnv>,
  keyId: string,
  body: unknown,
  change: (key: KeyChange) => Promise<{ credential: CredentialRow; secret?: string } | null>,
): Promise<never> {
  const account = callerOf(c);
  const deps = c.get("deps");
  const used = await liveUsedBytes(c, keyId);
  return idempotentWrite(c, account, body, async (tx) => {
    const changed = await change({
      deps: { db: tx, now: deps.now },
      input: { accountId: account.accountId, actor: account.accountId, keyId },
    });
    if (!changed) throw notFound(keyId);
    const key = toPoolKey(changed.credential, used);
    return {
      status: 200,
      body: changed.secret === undefined ? key : { ...key, secret: changed.secret },
      subject: changed.credential.id,
    };
  });
}

/**
 * The write path every mutating route takes: Postgres (change + audit + idempotency record in one
 * transaction), then the Redis mirror of the key it touched. A replay re-runs the mirror sync, so a
 * client that got a 503 repairs the cache by retrying with its Idempotency-Key.
 * Typed `never` so any route accepts it: a replayed body comes from storage, not from a typed c.json.
 */
export async function idempotentWrite(
  c: Context<AppEnv>,
  account: ApiKeyAccount,
  body: unknown,
  mutate: (tx: Queryable) => Promise<WriteOutcome>,
): Promise<never> {
  const deps = c.get("deps");
  const key = c.req.header("idempotency-key");
  const result = await runIdempotent(
    deps.db,
    key
      ? {
          accountId: account.accountId,
          key,
          apiKeySecret: c.req.header("x-api-key") ?? "",
          method: c.req.method,
          path: new URL(c.req.url).pathname,
          body,
        }
      : null,
    mutate,
  );
  if (result.kind === "mismatch") throw new ApiError("E_IDEMPOTENCY_MISMATCH", result.reason);
  const { outcome } = result;
  if (outcome.subject) {
    try {
      await syncCredentialMirror(deps, outcome.subject);
    } catch (err) {
      console.error(
        JSON.stringify({
          level: "error",
          requestId: c.get("requestId"),
          msg: "credential mirror write failed",
          keyId: outcome.subject,
          error: String((err as Error)?.message ?? err).slice(0, 200),
        }),
      );
      throw new ApiError(
        "E_UNAVAILABLE",
        key
          ? "saved, but the gateway cache could not be updated; retry with the same Idempotency-Key"
          : "saved, but the gateway cache could not be updated; send an Idempotency-Key to retry writes safely",
        { headers: { "Retry-After": "1" } },
      );
    }
  }
  if (result.kind === "replay") c.header("Idempotent-Replayed", "true");
  c.header("Cache-Control", "no-store");
  return c.json(outcome.body as object, outcome.status as 200) as never;
}
