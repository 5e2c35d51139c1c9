import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { type ApiKeyAccount, isHumanOperator, isOpsAgent } from "../../services/auth.ts";
import { requireApiKey } from "../api-key.ts";

/**
 * Human operators only (the network's own supply, accounts and keys): an `operate` key of an
 * operator account. 401 for no/unknown key, 403 `E_SCOPE_REQUIRED` for a key without `operate`
 * (an ops-agent key included), 403 naming `what` for any other account kind.
 */
export async function requireOperator(c: Context<AppEnv>, what: string): Promise<string> {
  return (await requireOperatorKey(c, what)).accountId;
}

/** requireOperator, answering with the whole key (its id is the actor of what it does). */
export async function requireOperatorKey(c: Context<AppEnv>, what: string): Promise<ApiKeyAccount> {
  const account = await requireApiKey(c, ["operate"]);
  if (account.accountKind !== "operator")
    throw new ApiError("E_FORBIDDEN", `${what} are for operator accounts`);
  return account;
}

/** An `operate` key of an operator account or an `ops-agent` key of an ops account (`what` names the routes). */
export async function requireOperatorOrAgent(c: Context<AppEnv>, what: string): Promise<ApiKeyAccount> {
  const account = await requireApiKey(c, ["operate", "ops-agent"]);
  if (!isHumanOperator(account) && !isOpsAgent(account))
    throw new ApiError("E_FORBIDDEN", `${what} are for operator and ops accounts`);
  return account;
}

/** Read-only operations views: a human operator, or an AI operator's `ops-agent` key. */
export async function requireOpsReader(c: Context<AppEnv>, what: string): Promise<string> {
  const account = await requireApiKey(c, ["operate", "ops-agent"]);
  if (account.accountKind !== "operator" && account.accountKind !== "ops")
    throw new ApiError("E_FORBIDDEN", `${what} are for operator and ops accounts`);
  return account.accountId;
}

/** Why a human decided as they did: shown to the supplier and audited; not blank, at most 500 characters. */
export const decisionReason = z
  .string()
  // What trim() keeps must not be empty, stated so /openapi.json carries it (the list names
  // JavaScript's whitespace for validators whose \s is narrower).
  .regex(/[^\s\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]/, "must not be blank")
  .trim()
  .min(1)
  .max(500)
  .openapi({ description: "shown to the supplier and audited" });
