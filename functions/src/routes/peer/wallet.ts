/** GET/PUT /v1/peer/wallet: the wallet an account's earnings are paid to (supply-scoped keys). */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { withTransaction } from "../../../../shared/db/pool.ts";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { getWallet, type PayoutWallet, setWallet, walletAddressProblem } from "../../services/wallets.ts";
import { callerOf, requireApiKey } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";

export const PayoutNetwork = z
  .enum(["base", "solana"])
  .openapi({ description: "where payouts are sent: USDC on Base, or USDC on Solana (not paid yet)" });

const WalletBody = z
  .object({
    network: PayoutNetwork,
    address: z.string().min(1).max(100).openapi({
      description: "base: the EIP-55 checksummed 0x address; solana: a base58 wallet address (on-curve)",
      example: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    }),
  })
  .strict()
  .openapi("PayoutWalletSet");

const Wallet = z
  .object({
    network: PayoutNetwork,
    address: z.string(),
    payableFrom: z.string().openapi({
      description: "the end of the cooling period: withdrawals pay to this wallet only from then on",
    }),
    updatedAt: z.string(),
    changed: z
      .boolean()
      .optional()
      .openapi({ description: "PUT only: false when the wallet was already this one" }),
  })
  .openapi("PayoutWallet");

const ERRORS = {
  400: errorResponse(
    "Invalid input; the message names the field (an address that fails its network's checks included)",
  ),
  401: errorResponse("Missing, unknown or revoked X-API-Key"),
  403: errorResponse("E_SCOPE_REQUIRED: the key lacks the `supply` scope"),
} as const;

const putRoute = createRoute({
  method: "put",
  path: "/v1/peer/wallet",
  summary: "Set the payout wallet; a new wallet pays only after the cooling period (7 days by default)",
  tags: ["peer"],
  security: [{ ApiKey: [] }],
  request: { body: { required: true, content: { "application/json": { schema: WalletBody } } } },
  responses: {
    200: {
      description: "The wallet, with the date it becomes payable",
      content: { "application/json": { schema: Wallet } },
    },
    ...ERRORS,
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/v1/peer/wallet",
  summary: "The payout wallet and when it becomes payable",
  tags: ["peer"],
  security: [{ ApiKey: [] }],
  responses: {
    200: { description: "The wallet", content: { "application/json": { schema: Wallet } } },
    401: ERRORS[401],
    403: ERRORS[403],
    404: errorResponse("E_NOT_FOUND: no wallet is registered yet"),
  },
});

const view = (w: PayoutWallet) => ({
  network: w.network,
  address: w.address,
  payableFrom: w.payableFrom.toISOString(),
  updatedAt: w.updatedAt.toISOString(),
});

/** A `supply` key: the supplier (or farmer) whose earnings these are. */
export const requireSupplyKey = (c: Parameters<typeof requireApiKey>[0]) => requireApiKey(c, ["supply"]);

export function registerPeerWallet(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  // Before validation: anonymous callers learn nothing about the schema.
  app.use("/v1/peer/wallet", async (c, next) => {
    await requireSupplyKey(c);
    await next();
  });

  app.openapi(putRoute, async (c) => {
    const body = c.req.valid("json");
    const problem = walletAddressProblem(body.network, body.address);
    if (problem)
      throw new ApiError("E_VALIDATION", `invalid request: address: ${problem}`, {
        details: { issues: [{ path: "address", message: problem }] },
      });
    const caller = callerOf(c);
    const deps = c.get("deps");
    const { wallet, changed } = await withTransaction(deps.db, (tx) =>
      setWallet(tx, {
        accountId: caller.accountId,
        actor: caller.apiKeyId,
        network: body.network,
        address: body.address,
        now: deps.now(),
      }),
    );
    c.header("Cache-Control", "no-store");
    return c.json({ ...view(wallet), changed }, 200);
  });

  app.openapi(getRoute, async (c) => {
    const wallet = await getWallet(c.get("deps").db, callerOf(c).accountId);
    if (!wallet) throw new ApiError("E_NOT_FOUND", "no payout wallet is registered: PUT /v1/peer/wallet");
    c.header("Cache-Control", "no-store");
    return c.json(view(wallet), 200);
  });
}
