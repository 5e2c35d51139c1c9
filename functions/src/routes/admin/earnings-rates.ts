/**
 * PUT /v1/admin/accounts/{id}/earnings-rates: a human operator sets an account's own per-GB rates
 * over settings.earnings_per_gb (a farmer's `mobile` rate is what its modem exits earn, ADR 0017).
 * Audited with the previous value. The /v1/admin/accounts/* middleware (account-api-keys.ts)
 * admits only an operator account's `operate` key.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { withTransaction } from "../../../../shared/db/pool.ts";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { setEarningsOverride } from "../../services/earnings.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse } from "../reseller/common.ts";
import { OPERATOR_ERRORS } from "./accounts.ts";
import { requireOperatorKey } from "./common.ts";

const Rate = z
  .string()
  .regex(/^\d{1,6}(\.\d{1,6})?$/, 'must be decimal USDC per GB with at most 6 decimals, e.g. "0.8"')
  .openapi({ example: "0.8" });

const Rates = z
  .object({ mobile: Rate.optional(), residential: Rate.optional(), datacenter: Rate.optional() })
  .strict();

const route = createRoute({
  method: "put",
  path: "/v1/admin/accounts/{id}/earnings-rates",
  summary:
    "Set (or with null clear) an account's own earnings rates per GB (a farmer's modems earn `mobile`)",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: {
    params: z.object({
      id: z
        .string()
        .regex(/^acct_[A-Za-z0-9_]{1,64}$/, "must be an account id (acct_...)")
        .openapi({ param: { name: "id", in: "path" }, example: "acct_0a1b2c3d4e5f6a7b" }),
    }),
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z
            .object({
              overrides: Rates.nullable().openapi({
                description:
                  "decimal USDC per GB by IP class over settings.earnings_per_gb; null or {} = none (the settings row alone)",
              }),
            })
            .strict()
            .openapi("EarningsRatesSet"),
        },
      },
    },
  },
  responses: {
    200: {
      description: "The overrides and the rates the account now earns",
      content: {
        "application/json": {
          schema: z
            .object({
              accountId: z.string(),
              overrides: z.record(z.string(), z.string()).nullable(),
              rates: z.object({ mobile: z.string(), residential: z.string(), datacenter: z.string() }),
            })
            .openapi("EarningsRates"),
        },
      },
    },
    ...OPERATOR_ERRORS,
    404: errorResponse("No such account"),
  },
});

const emptyToNull = <T extends object>(o: T | null) => (o && Object.keys(o).length > 0 ? o : null);

export function registerAdminEarningsRates(app: OpenAPIHono<AppEnv>) {
  app.use("/v1/admin/accounts/:id/earnings-rates", async (c, next) => {
    await requireOperatorKey(c, "earnings rates");
    await next();
  });
  app.openapi(route, async (c) => {
    const { id } = c.req.valid("param");
    const deps = c.get("deps");
    const r = await withTransaction(deps.db, (tx) =>
      setEarningsOverride(tx, {
        accountId: id,
        // {} overrides nothing: stored as none.
        overrides: emptyToNull(c.req.valid("json").overrides),
        actor: callerOf(c).apiKeyId,
      }),
    );
    if (!r) throw new ApiError("E_NOT_FOUND", `no account ${id}`);
    c.header("Cache-Control", "no-store");
    return c.json(
      { accountId: id, overrides: (r.overrides as Record<string, string> | null) ?? null, rates: r.rates },
      200,
    );
  });
}
