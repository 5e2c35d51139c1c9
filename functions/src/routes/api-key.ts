/** X-API-Key at the HTTP edge: 401 without a valid key, 403 `E_SCOPE_REQUIRED` naming the missing scope. */
import type { Context } from "hono";
import type { ApiKeyScope } from "../../../shared/accounts.ts";
import { ApiError } from "../../../shared/errors.ts";
import type { AppEnv } from "../env.ts";
import { type ApiKeyAccount, authenticateApiKey } from "../services/auth.ts";

/** The 403 for a valid key without `scope`; `route` says what it was for ("POST /v1/reseller/pool-keys"). */
export function scopeRequired(scope: ApiKeyScope, route: string): ApiError {
  return new ApiError("E_SCOPE_REQUIRED", `this API key lacks the \`${scope}\` scope that ${route} needs`, {
    details: { requiredScope: scope },
  });
}

/** The account behind X-API-Key if its key carries one of `scopes` (the first is named in a 403). */
export async function requireApiKey(
  c: Context<AppEnv>,
  scopes: readonly [ApiKeyScope, ...ApiKeyScope[]],
): Promise<ApiKeyAccount> {
  const header = c.req.header("x-api-key");
  if (!header) throw new ApiError("E_UNAUTHORIZED", "X-API-Key header is required (psx_...)");
  const account = await authenticateApiKey(c.get("deps"), header);
  if (!account) throw new ApiError("E_UNAUTHORIZED", "X-API-Key is not a valid API key");
  if (!scopes.some((s) => account.scopes.includes(s)))
    throw scopeRequired(scopes[0], `${c.req.method} ${new URL(c.req.url).pathname}`);
  c.set("caller", account);
  return account;
}

/** The account a route's auth middleware authenticated (`requireApiKey` ran before validation). */
export function callerOf(c: Context<AppEnv>): ApiKeyAccount {
  const caller = c.get("caller");
  if (!caller) throw new Error(`${c.req.method} ${c.req.path} has no API-key middleware`);
  return caller;
}
