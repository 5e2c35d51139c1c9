import type { Context } from "hono";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { authenticateApiKey } from "../../services/auth.ts";

/**
 * Operator accounts only (the network's own supply and health, not a customer's): the account id
 * behind X-API-Key, or 401 for no/unknown key and 403 naming `what` for any other account kind.
 */
export async function requireOperator(c: Context<AppEnv>, what: string): Promise<string> {
  const account = await authenticateApiKey(c.get("deps"), c.req.header("x-api-key"));
  if (!account) throw new ApiError("E_UNAUTHORIZED", "X-API-Key is missing or not a valid API key");
  if (account.accountKind !== "operator")
    throw new ApiError("E_FORBIDDEN", `${what} are for operator accounts`);
  return account.accountId;
}
