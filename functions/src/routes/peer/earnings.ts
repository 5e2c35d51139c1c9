/** GET /v1/peer/earnings: what an account's devices have earned (accrued by the cron each minute). */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { formatUsdc } from "../../../../shared/money.ts";
import type { AppEnv } from "../../env.ts";
import { earningsSummary } from "../../services/earnings.ts";
import { supplierBalance } from "../../services/ledger.ts";
import { callerOf, requireApiKey } from "../api-key.ts";
import { ErrorBody, registerResellerAuth } from "../reseller/common.ts";

const Micro = z.string().regex(/^\d+$/).openapi({ description: "integer micro-USDC", example: "1250000" });
const Usdc = z.string().openapi({ description: "the same amount as decimal USDC", example: "1.25" });
const Bytes = z
  .string()
  .regex(/^\d+$/)
  .openapi({ description: "bytes served, both directions, as an integer string" });
const Rate = z.string().openapi({ description: "decimal USDC per GB (10^9 bytes)", example: "0.5" });

const Earnings = z
  .object({
    accountId: z.string(),
    currency: z.literal("USDC"),
    accruedMicro: Micro,
    accrued: Usdc,
    paidMicro: Micro.openapi({
      description: "paid out on-chain so far (GET /v1/peer/withdrawals has the detail)",
    }),
    pendingMicro: Micro.openapi({ description: "accrued minus paid: the pending payout balance" }),
    bytes: Bytes,
    deviceCount: z.number().int().openapi({ description: "devices that have earned anything" }),
    rates: z.object({ mobile: Rate, residential: Rate, datacenter: Rate }).openapi({
      description: "live per-GB rates for this account by IP class (class is decided server-side)",
    }),
    devices: z.array(
      z.object({
        deviceId: z.string(),
        name: z.string(),
        ipType: z.enum(["mobile", "residential", "datacenter"]),
        bytes: Bytes,
        accruedMicro: Micro,
        accrued: Usdc,
      }),
    ),
    days: z.array(
      z.object({ date: z.string().openapi({ example: "2026-11-30" }), bytes: Bytes, accruedMicro: Micro }),
    ),
    settlement: z.string(),
  })
  .openapi("PeerEarnings");

const route = createRoute({
  method: "get",
  path: "/v1/peer/earnings",
  summary: "Earnings accrued by the account's devices: totals, top devices, per UTC day",
  tags: ["peer"],
  security: [{ ApiKey: [] }],
  request: {
    query: z.object({
      days: z.coerce
        .number()
        .int()
        .min(1)
        .max(90)
        .default(30)
        .openapi({ description: "1-90, today included" }),
      limit: z.coerce
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(100)
        .openapi({ description: "devices listed, highest earnings first (1-1000)" }),
    }),
  },
  responses: {
    200: { description: "The account's earnings", content: { "application/json": { schema: Earnings } } },
    400: { description: "Invalid input", content: { "application/json": { schema: ErrorBody } } },
    401: {
      description: "Missing or unknown X-API-Key",
      content: { "application/json": { schema: ErrorBody } },
    },
    403: {
      description: "E_SCOPE_REQUIRED: the key lacks the `supply` scope",
      content: { "application/json": { schema: ErrorBody } },
    },
  },
});

export function registerPeerEarnings(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  // Before validation: anonymous callers learn nothing about the schema.
  app.use("/v1/peer/earnings", async (c, next) => {
    await requireApiKey(c, ["supply"]);
    await next();
  });

  app.openapi(route, async (c) => {
    const { accountId } = callerOf(c);
    const { days, limit } = c.req.valid("query");
    const deps = c.get("deps");
    const [s, balance] = await Promise.all([
      earningsSummary(deps.db, accountId, { now: deps.now(), days, limit }),
      supplierBalance(deps.db, accountId),
    ]);
    c.header("Cache-Control", "no-store");
    return c.json(
      {
        accountId,
        currency: "USDC" as const,
        accruedMicro: String(s.accruedMicro),
        accrued: formatUsdc(s.accruedMicro),
        paidMicro: String(balance.paidMicro),
        pendingMicro: String(s.accruedMicro - balance.paidMicro),
        bytes: String(s.bytes),
        deviceCount: s.deviceCount,
        rates: s.rates,
        devices: s.devices.map((d) => ({
          deviceId: d.deviceId,
          name: d.name,
          ipType: d.ipType,
          bytes: String(d.bytes),
          accruedMicro: String(d.accruedMicro),
          accrued: formatUsdc(d.accruedMicro),
        })),
        days: s.days.map((d) => ({
          date: d.date,
          bytes: String(d.bytes),
          accruedMicro: String(d.accruedMicro),
        })),
        settlement:
          "relays flush byte counts at most 5 s apart; the every-minute cron accrues them, so figures trail traffic by about a minute",
      },
      200,
    );
  });
}
