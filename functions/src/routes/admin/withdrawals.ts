/**
 * POST /v1/admin/withdrawals/{id}/return: a human operator returns the amount of a payout that
 * failed on chain to the supplier's available balance (docs/adr/0014). Only an `operate` key of an
 * operator account may; an ops-agent's key gets 403 E_SCOPE_REQUIRED naming `operate`.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { returnFailedWithdrawal } from "../../services/withdrawals.ts";
import { callerOf } from "../api-key.ts";
import { WithdrawalView, withdrawalView } from "../peer/withdrawals.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { decisionReason, requireOperatorKey } from "./common.ts";

const returnRoute = createRoute({
  method: "post",
  path: "/v1/admin/withdrawals/{id}/return",
  summary: "Return a failed payout's amount to the supplier's available balance (human operators only)",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: {
    params: z.object({
      id: z
        .string()
        .regex(/^wd_[0-9a-f]{24}$/, "must be a withdrawal id (wd_...)")
        .openapi({ param: { name: "id", in: "path" }, example: "wd_0a1b2c3d4e5f6a7b8c9d0e1f" }),
    }),
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z.object({ reason: decisionReason }).strict().openapi("WithdrawalReturn"),
        },
      },
    },
  },
  responses: {
    200: {
      description: "Returned: the withdrawal is `returned` and its amount available again",
      content: { "application/json": { schema: WithdrawalView } },
    },
    400: errorResponse("Invalid input; the message names the field"),
    401: errorResponse("Missing, unknown or revoked X-API-Key"),
    403: errorResponse(
      "E_SCOPE_REQUIRED: only a human operator's `operate` key returns money (an ops-agent key included); E_FORBIDDEN: not an operator account",
    ),
    404: errorResponse("E_NOT_FOUND: no such withdrawal"),
    409: errorResponse("E_CONFLICT: the withdrawal's payout did not fail (or it was already returned)"),
  },
});

export function registerAdminWithdrawals(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  // Before validation: anonymous callers learn nothing about the schema.
  app.use("/v1/admin/withdrawals/:id/return", async (c, next) => {
    await requireOperatorKey(c, "returns of failed payouts");
    await next();
  });

  app.openapi(returnRoute, async (c) => {
    const deps = c.get("deps");
    const out = await returnFailedWithdrawal(deps.db, {
      id: c.req.valid("param").id,
      actor: callerOf(c).apiKeyId,
      reason: c.req.valid("json").reason,
      now: deps.now(),
    });
    if (!out.ok) throw new ApiError(out.code === "not_found" ? "E_NOT_FOUND" : "E_CONFLICT", out.message);
    c.header("Cache-Control", "no-store");
    return c.json(withdrawalView(out.withdrawal), 200);
  });
}
