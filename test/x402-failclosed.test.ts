// Fail-closed: with a misconfigured recipient, or an RPC serving another chain, the purchase routes
// answer 503 naming what is wrong and mint nothing, while the rest of the API keeps working.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EvmChain } from "../dev/chains/evm.ts";
import { createPool } from "../shared/db/pool.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";
import { baseRailVars, createHouseAccount, deleteAccount, transferUsdc } from "./helpers/x402.ts";
import { connectEvmChain, sharedX402 } from "./helpers/x402-fixture.ts";

const e = stateEnv();
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
// The run's shared anvil chain (test/helpers/x402-fixture.ts); the API is this file's own: it
// needs settings the shared one must not have.
const chain: EvmChain = connectEvmChain(await sharedX402());
let badRecipient: Api;
let wrongChain: Api;
let houseAccountId: string;

beforeAll(async () => {
  houseAccountId = await createHouseAccount(db, `x402fc_${Date.now()}`);
  const base = { ...stateVars(e), ...baseRailVars(chain, houseAccountId) };
  // One at a time: two wrangler dev processes starting together collide on a local socket.
  // A truncated address: exactly the typo that must not route money anywhere.
  badRecipient = await startApi(
    { ...base, X402_BASE_PAY_TO: chain.payTo.address.slice(0, 40) },
    { tmp: e.PEERPROXY_TEST_TMP },
  );
  wrongChain = await startApi(
    { ...base, X402_BASE_PAY_TO: chain.payTo.address, X402_BASE_CHAIN_ID: "1" },
    { tmp: e.PEERPROXY_TEST_TMP },
  );
}, 90_000);

afterAll(async () => {
  await Promise.all([badRecipient?.stop(), wrongChain?.stop()]);
  await deleteAccount(db, houseAccountId);
  await db.end();
});

describe("x402 fails closed", () => {
  it("a misconfigured recipient answers 503 naming X402_BASE_PAY_TO, even to a valid payment, and mints nothing", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const hash = await transferUsdc(chain, agent, 2_000_000n);
    for (const headers of [{}, { "Payment-Signature": hash }] as Record<string, string>[]) {
      const res = await fetch(`${badRecipient.url}/v1/x402/pool?tier=mbl&country=any&traffic=0.5`, {
        headers,
      });
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(res.status).toBe(503);
      expect(body.error.code).toBe("E_UNAVAILABLE");
      expect(body.error.message).toMatch(/X402_BASE_PAY_TO/);
    }
    const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE tx_ref = $1", [hash]);
    expect(rows).toHaveLength(0);
    const { rows: creds } = await db.query("SELECT 1 FROM credentials WHERE account_id = $1", [
      houseAccountId,
    ]);
    expect(creds).toHaveLength(0);
    // Only the money routes are closed.
    expect((await fetch(`${badRecipient.url}/v1/x402/pool/pricing`)).status).toBe(200);
    expect((await fetch(`${badRecipient.url}/health`)).status).toBe(200);
  });

  it("an RPC serving another chain than X402_BASE_CHAIN_ID answers 503 naming both", async () => {
    const res = await fetch(`${wrongChain.url}/v1/x402/pool?tier=mbl&country=any&traffic=0.5`);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(res.status).toBe(503);
    expect(body.error.message).toMatch(/serves chain 8453, not X402_BASE_CHAIN_ID 1/);
    const pricing = (await (await fetch(`${wrongChain.url}/v1/x402/pool/pricing`)).json()) as {
      purchasable: boolean;
    };
    expect(pricing.purchasable).toBe(false);
  });
});
