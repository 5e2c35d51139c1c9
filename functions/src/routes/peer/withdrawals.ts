/** POST/GET /v1/peer/withdrawals: withdraw accrued earnings to the payout wallet (supply-scoped keys). */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ApiError } from "../../../../shared/errors.ts";
import { formatUsdc } from "../../../../shared/money.ts";
import type { AppEnv } from "../../env.ts";
import { supplierBalance } from "../../services/ledger.ts";
import {
  listWithdrawals,
  requestWithdrawal,
  WITHDRAWAL_STATUSES,
  type Withdrawal,
} from "../../services/withdrawals.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { PayoutNetwork, requireSupplyKey } from "./wallet.ts";

const Micro = z.string().regex(/^\d+$/).openapi({ description: "integer micro-USDC", example: "5000000" });

const WithdrawalBody = z
  .object({
    amountMicroUsdc: z
      .union([
        z.string().regex(/^[1-9]\d{0,17}$/, 'must be a positive integer of micro-USDC, e.g. "5000000"'),
        z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
      ])
      .openapi({
        description: "integer micro-USDC (1 USDC = 1000000), a string or a safe integer",
        example: "5000000",
      }),
  })
  .strict()
  .openapi("WithdrawalCreate");

export const WithdrawalView = z
  .object({
    id: z.string().openapi({ example: "wd_0a1b2c3d4e5f6a7b8c9d0e1f" }),
    amountMicroUsdc: Micro,
    amount: z.string().openapi({ description: "the same as decimal USDC", example: "5" }),
    network: PayoutNetwork,
    address: z.string().openapi({ description: "the wallet this withdrawal pays (fixed at request time)" }),
    status: z.enum(WITHDRAWAL_STATUSES).openapi({
      description:
        "pending_approval: waiting for a human operator; approved: the payout is on its way; paid: confirmed on-chain; rejected: refused, the amount back in the available balance; failed: the transfer failed on chain, the amount held until a human decides; returned: after a failure, the amount back in the available balance",
    }),
    approvalId: z.string().nullable(),
    txHash: z.string().nullable(),
    confirmations: z.number().int(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi("Withdrawal");

const ERRORS = {
  400: errorResponse("Invalid input; the message names the field"),
  401: errorResponse("Missing, unknown or revoked X-API-Key"),
  403: errorResponse("E_SCOPE_REQUIRED: the key lacks the `supply` scope"),
} as const;

const postRoute = createRoute({
  method: "post",
  path: "/v1/peer/withdrawals",
  summary: "Withdraw to the registered payout wallet; a human operator approves every payout",
  tags: ["peer"],
  security: [{ ApiKey: [] }],
  request: { body: { required: true, content: { "application/json": { schema: WithdrawalBody } } } },
  responses: {
    201: {
      description: "Requested; the amount is reserved and an approval is filed",
      content: { "application/json": { schema: WithdrawalView } },
    },
    ...ERRORS,
    409: errorResponse(
      "E_WALLET_REQUIRED (no wallet), E_WALLET_COOLING (details.payableFrom: the date the wallet pays), E_INSUFFICIENT_BALANCE (details.availableMicro)",
    ),
    422: errorResponse("E_BELOW_MINIMUM: details.minimumMicro names the minimum for this account"),
  },
});

const listRoute = createRoute({
  method: "get",
  path: "/v1/peer/withdrawals",
  summary: "The account's withdrawals with their status, and its balances",
  tags: ["peer"],
  security: [{ ApiKey: [] }],
  responses: {
    200: {
      description: "Newest first (up to 100)",
      content: {
        "application/json": {
          schema: z
            .object({
              availableMicroUsdc: Micro.openapi({ description: "accrued and not withdrawn" }),
              pendingPayoutMicroUsdc: Micro.openapi({ description: "withdrawn, not yet paid on-chain" }),
              paidMicroUsdc: Micro.openapi({ description: "paid on-chain" }),
              withdrawals: z.array(WithdrawalView),
            })
            .openapi("WithdrawalList"),
        },
      },
    },
    401: ERRORS[401],
    403: ERRORS[403],
  },
});

export const withdrawalView = (w: Withdrawal) => ({
  id: w.id,
  amountMicroUsdc: String(w.amountMicro),
  amount: formatUsdc(w.amountMicro),
  network: w.network,
  address: w.address,
  status: w.status,
  approvalId: w.approvalId,
  txHash: w.txHash,
  confirmations: w.confirmations,
  createdAt: w.createdAt.toISOString(),
  updatedAt: w.updatedAt.toISOString(),
});

export function registerPeerWithdrawals(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  // Before validation: anonymous callers learn nothing about the schema.
  app.use("/v1/peer/withdrawals", async (c, next) => {
    await requireSupplyKey(c);
    await next();
  });

  app.openapi(postRoute, async (c) => {
    const caller = callerOf(c);
    const deps = c.get("deps");
    const out = await requestWithdrawal(deps.db, {
      accountId: caller.accountId,
      actor: caller.apiKeyId,
      amountMicro: BigInt(String(c.req.valid("json").amountMicroUsdc)),
      now: deps.now(),
    });
    c.header("Cache-Control", "no-store");
    if (out.ok) return c.json(withdrawalView(out.withdrawal), 201);
    const r = out.refusal;
    switch (r.code) {
      case "no_wallet":
        throw new ApiError("E_WALLET_REQUIRED", r.message);
      case "cooling":
        throw new ApiError("E_WALLET_COOLING", r.message, {
          details: { payableFrom: r.payableFrom.toISOString() },
        });
      case "below_minimum":
        throw new ApiError("E_BELOW_MINIMUM", r.message, {
          details: { minimumMicro: String(r.minimumMicro), supplyKind: r.supplyKind },
        });
      case "insufficient_balance":
        throw new ApiError("E_INSUFFICIENT_BALANCE", r.message, {
          details: { availableMicro: String(r.availableMicro) },
        });
    }
  });

  app.openapi(listRoute, async (c) => {
    const { accountId } = callerOf(c);
    const db = c.get("deps").db;
    const [withdrawals, balance] = await Promise.all([
      listWithdrawals(db, accountId),
      supplierBalance(db, accountId),
    ]);
    c.header("Cache-Control", "no-store");
    return c.json(
      {
        availableMicroUsdc: String(balance.availableMicro),
        pendingPayoutMicroUsdc: String(balance.pendingPayoutMicro),
        paidMicroUsdc: String(balance.paidMicro),
        withdrawals: withdrawals.map(withdrawalView),
      },
      200,
    );
  });
}
