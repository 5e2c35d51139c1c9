// Operator switches and limits on the purchase route: the bare-hash path can be turned off
// (docs/adr/0002), and paid attempts are rate limited per client IP.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EvmChain } from "../dev/chains/evm.ts";
import { createPool } from "../shared/db/pool.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";
import { baseRailVars, createHouseAccount, deleteAccount, stockUs, transferUsdc } from "./helpers/x402.ts";
import { connectEvmChain, sharedX402 } from "./helpers/x402-fixture.ts";

const e = stateEnv();
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
// The run's shared anvil chain (test/helpers/x402-fixture.ts); the API is this file's own: it
// needs settings the shared one must not have.
const chain: EvmChain = connectEvmChain(await sharedX402());
let api: Api;
let houseAccountId: string;
const ORDER = "/v1/x402/pool?tier=mbl&country=any&traffic=0.1";

beforeAll(async () => {
  houseAccountId = await createHouseAccount(db, `x402g_${Date.now()}`);
  await stockUs(db);
  api = await startApi(
    {
      ...stateVars(e),
      ...baseRailVars(chain, houseAccountId),
      X402_BARE_HASH: "off",
      X402_RATE_LIMIT_PURCHASE_PER_MINUTE: "3",
    },
    { tmp: e.PEERPROXY_TEST_TMP },
  );
}, 90_000);

afterAll(async () => {
  await api?.stop();
  await deleteAccount(db, houseAccountId);
  await db.end();
});

describe("x402 purchase guards", () => {
  it("with X402_BARE_HASH=off a bare tx hash is refused naming Payment-Signature and nothing is consumed", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const hash = await transferUsdc(chain, agent, 400_000n);
    await stockUs(db);
    const res = await fetch(`${api.url}${ORDER}`, {
      headers: { "Payment-Signature": hash, "CF-Connecting-IP": "192.0.2.1" },
    });
    const body = (await res.json()) as { error: { code: string; details: { issues: { path: string }[] } } };
    expect(res.status).toBe(400);
    expect(body.error.details.issues[0]?.path).toBe("Payment-Signature");
    const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE tx_ref = $1", [hash]);
    expect(rows).toHaveLength(0);
  });

  it("paid attempts beyond the per-IP limit get 429 with Retry-After", async () => {
    const ip = `198.51.100.${Math.floor(Math.random() * 250) + 1}`;
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      await stockUs(db);
      const res = await fetch(`${api.url}${ORDER}`, {
        headers: { "Payment-Signature": `0x${"ab".repeat(32)}`, "CF-Connecting-IP": ip },
      });
      statuses.push(res.status);
      if (res.status === 429) expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    }
    expect(statuses).toEqual([400, 400, 400, 429]);
  });
});
