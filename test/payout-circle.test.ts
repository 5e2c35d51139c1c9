// The economy end to end (issue 10 "Done when"): an agent buys with USDC on anvil (the sale posts
// to the ledger); a customer's pool key -> gateway-node -> relay -> a supplier's peer (x402 sells
// only the `mbl` modem tier, whose bytes pay modem farmers (test/farmer.test.ts), so the
// supplier's bytes come from a reseller's pool key); the API's cron accrues them; the supplier sets a wallet,
// waits out the cooling, withdraws; an ops-agent cannot approve, a human does; the treasury pays on
// anvil; the books balance and the audit chain verifies.
import { createServer, type Server } from "node:http";
import { parseAbi } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EvmChain, startEvmChain } from "../dev/chains/evm.ts";
import { verifyAuditChain } from "../functions/src/services/audit-chain.ts";
import { supplierBalance, unbalancedTransactions } from "../functions/src/services/ledger.ts";
import { loadGatewayConfig } from "../gateway-node/config.ts";
import { type Gateway, startGateway } from "../gateway-node/gateway.ts";
import { curlStatusAndSize, listPeer } from "../gateway-node/testing.ts";
import { connectPeer, type TestPeer } from "../relay-node/testing/peer.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { ownRedisState } from "./helpers/env.ts";
import { apiCaller } from "./helpers/payouts.ts";
import {
  baseRailVars,
  createHouseAccount,
  deleteAccount,
  deletePurchases,
  newPayer,
  stockUs,
  transferUsdc,
} from "./helpers/x402.ts";

// A Redis of its own: this file runs the API cron, which would delist what other files list.
const state = await ownRedisState("payout-circle");
const e = state.env;
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
// A country code no other test uses, so the gateway can only pick this file's peer.
const country = `w${"abcdefghijklmnopqrstuvwxyz"[Math.floor(Math.random() * 26)]}`;
const deviceId = `agent_${randomHex(8)}`;
const BODY = Buffer.alloc(4 * 1024 * 1024, 7);
const balanceOf = parseAbi(["function balanceOf(address) view returns (uint256)"]);

let chain: EvmChain;
let api: Api;
let relay: TestRelay;
let gw: Gateway;
let target: Server;
let targetPort: number;
let peer: TestPeer | undefined;
let houseAccountId: string;
const payers: string[] = [];

beforeAll(async () => {
  chain = await startEvmChain();
  const treasuryKey = generatePrivateKey();
  const treasury = privateKeyToAccount(treasuryKey).address;
  await chain.testClient.setBalance({ address: treasury, value: 10n ** 20n });
  await chain.mint(treasury, 1_000_000_000n);
  houseAccountId = await createHouseAccount(db, `circle_${randomHex(3)}`);
  [api, relay] = await Promise.all([
    startApi(
      {
        ...stateVars(e),
        ...baseRailVars(chain, houseAccountId),
        GATEWAY_PUBLIC_HOST: "127.0.0.1",
        // Every test file buys from 127.0.0.1; the per-IP limit itself is pinned in x402-attacks.
        X402_RATE_LIMIT_PURCHASE_PER_MINUTE: "1000",
        PAYOUT_BASE_RPC_URL: chain.rpcUrl,
        PAYOUT_TREASURY_KEY: treasuryKey,
        PAYOUT_CONFIRMATIONS: "1",
        X402_BASE_USDC: chain.usdc,
      },
      { tmp: e.PEERPROXY_TEST_TMP },
    ),
    startTestRelay({ COUNTER_FLUSH_MS: "200", REDIS_URL: e.REDIS_URL }),
  ]);
  gw = await startGateway(
    loadGatewayConfig({
      REDIS_URL: e.REDIS_URL,
      RELAY_SHARED_SECRET: relay.sharedSecret,
      GATEWAY_HTTP_PORT: "0",
      GATEWAY_SOCKS_PORT: "0",
      GATEWAY_ADMIN_PORT: "0",
      GATEWAY_ALLOW_PRIVATE_TARGETS: "1",
    }),
    { redis: relay.redis },
  );
  target = createServer((_req, res) => res.end(BODY));
  targetPort = await new Promise<number>((r) =>
    target.listen(0, "127.0.0.1", () => r((target.address() as { port: number }).port)),
  );
}, 120_000);

afterAll(async () => {
  if (houseAccountId) {
    await deletePurchases(db, relay.redis, houseAccountId, payers);
    await deleteAccount(db, houseAccountId);
  }
  await delistEndpoint(relay.redis, deviceId).catch(() => {});
  await relay?.redis.del(keys.deviceBytes(deviceId), keys.presence(deviceId));
  peer?.close();
  await gw?.close();
  await relay?.close();
  target?.close();
  await api?.stop();
  await chain?.stop();
  await db.end();
  await state.stop();
});

const call = apiCaller(() => api.url);

describe("the supplier circle", () => {
  it("sale -> traffic -> accrual -> wallet -> withdrawal -> human approval -> USDC on anvil, books balanced, chain verified", async () => {
    // Customer money in: an agent pays USDC for a pool credential (402, transfer, retry with the hash).
    await stockUs(db);
    const order = `${api.url}/v1/x402/pool?tier=mbl&country=us&traffic=0.5`;
    const quote = (await (await fetch(order)).json()) as { accepts: { maxAmountRequired: string }[] };
    const price = BigInt(quote.accepts[0]!.maxAmountRequired);
    const agentWallet = await newPayer(chain, payers);
    const paid = await transferUsdc(chain, agentWallet, price);
    await stockUs(db);
    const bought = await fetch(order, { headers: { "Payment-Signature": paid } });
    expect(bought.status).toBe(200);
    const sale = await db.query<{ book: string; amount: string }>(
      `SELECT p.book, p.amount_micro::text AS amount FROM ledger_postings p JOIN ledger_txns t ON t.id = p.txn_id
        WHERE t.kind = 'sale' AND t.ref = $1 ORDER BY p.book`,
      [`base:${paid}`],
    );
    expect(sale.rows).toEqual([
      { book: "sales_revenue", amount: String(-price) },
      { book: "treasury", amount: String(price) },
    ]);

    // The supply side: a supplier (an SDK device: 10 USDC minimum) with a per-account rate high
    // enough that a few MB earn a withdrawable amount.
    const supplier = await createAccountWithKey(db, { name: `circle-s-${randomHex(3)}`, kind: "supplier" });
    await db.query("UPDATE accounts SET earnings_per_gb = $2 WHERE id = $1", [
      supplier.accountId,
      JSON.stringify({ mobile: "5000", residential: "5000", datacenter: "5000" }),
    ]);
    await db.query(
      "INSERT INTO devices (id, account_id, name, ip_type, sdk_version) VALUES ($1, $2, 'circle', 'residential', '0.4.0')",
      [deviceId, supplier.accountId],
    );
    peer = await connectPeer({
      url: relay.relay.wsUrl,
      token: await relay.token(deviceId, { acct: supplier.accountId }),
    });
    await peer.waitFor("connected");
    peer.sendControl("heartbeat");
    await peer.waitFor("heartbeat_ack");
    await listPeer(relay.redis, { deviceId, country, relayInternal: relay.relay.internalUrl });

    // The customer: a pool key from the real API, used through the real gateway.
    const customer = await createAccountWithKey(db, { name: `circle-c-${randomHex(3)}`, kind: "reseller" });
    const key = await call("POST", "/v1/reseller/pool-keys", customer.apiKey, {
      tier: "peer",
      country,
      capBytes: 100_000_000,
    });
    expect(key.status, JSON.stringify(key.body)).toBe(201);
    const got = await curlStatusAndSize(
      `http://${key.body.username}:${key.body.secret}@127.0.0.1:${gw.httpPort}`,
      `http://127.0.0.1:${targetPort}/`,
    );
    expect(got).toBe(`200 ${BODY.length}`);
    const counted = async () => {
      const h = await relay.redis.hgetall(keys.deviceBytes(deviceId));
      return Number(h.up ?? 0) + Number(h.down ?? 0);
    };
    await expect.poll(counted, { timeout: 10_000, interval: 100 }).toBeGreaterThanOrEqual(BODY.length);

    // The API's own cron accrues it (and the payouts job runs beside it, with nothing to pay yet).
    // The scheduled handler finishes its jobs after answering (waitUntil): call it until they land.
    const cron = `${api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`;
    const accruedNow = async () => {
      expect((await fetch(cron)).status).toBe(200);
      return BigInt((await call("GET", "/v1/peer/earnings", supplier.apiKey)).body.accruedMicro);
    };
    await expect.poll(accruedNow, { timeout: 20_000, interval: 500 }).toBeGreaterThan(0n);
    const accrued = await accruedNow();
    expect(accrued).toBeGreaterThanOrEqual((BigInt(BODY.length) * 5_000_000_000n) / 1_000_000_000n);

    // Wallet, cooling, withdrawal.
    const wallet = privateKeyToAccount(generatePrivateKey()).address;
    const set = await call("PUT", "/v1/peer/wallet", supplier.apiKey, { network: "base", address: wallet });
    expect(set.status).toBe(200);
    const early = await call("POST", "/v1/peer/withdrawals", supplier.apiKey, {
      amountMicroUsdc: "15000000",
    });
    expect(early.body.error).toMatchObject({
      code: "E_WALLET_COOLING",
      details: { payableFrom: set.body.payableFrom },
    });
    // Seven days pass.
    await db.query(
      "UPDATE payout_wallets SET payable_from = now() - interval '1 second' WHERE account_id = $1",
      [supplier.accountId],
    );
    const wd = await call("POST", "/v1/peer/withdrawals", supplier.apiKey, { amountMicroUsdc: "15000000" });
    expect(wd.status, JSON.stringify(wd.body)).toBe(201);

    // The gate: an ops-agent sees it and cannot approve; a human approves; the treasury pays.
    const agent = await createAccountWithKey(db, { name: "circle-ops", kind: "ops" });
    const human = await createAccountWithKey(db, { name: "circle-human", kind: "operator" });
    const pending = await call("GET", "/v1/admin/approvals?status=pending", agent.apiKey);
    expect(pending.body.approvals.map((a: { id: string }) => a.id)).toContain(wd.body.approvalId);
    expect(
      (await call("POST", `/v1/admin/approvals/${wd.body.approvalId}/approve`, agent.apiKey)).status,
    ).toBe(403);
    const before = await chain.publicClient.readContract({
      address: chain.usdc,
      abi: balanceOf,
      functionName: "balanceOf",
      args: [wallet],
    });
    const approved = await call("POST", `/v1/admin/approvals/${wd.body.approvalId}/approve`, human.apiKey);
    expect(approved.status).toBe(200);
    expect(approved.body.payout).toMatchObject({ status: "confirmed" });
    const after = await chain.publicClient.readContract({
      address: chain.usdc,
      abi: balanceOf,
      functionName: "balanceOf",
      args: [wallet],
    });
    expect(after - before).toBe(15_000_000n);

    // The books: every transaction balances; what was accrued is paid plus still owed.
    expect(await unbalancedTransactions(db)).toEqual([]);
    // (Another file's cron may settle a last relay flush meanwhile: compare with the ledger's own total.)
    const balance = await supplierBalance(db, supplier.accountId);
    const { rows } = await db.query<{ total: string }>(
      "SELECT sum(amount_micro)::text AS total FROM earnings_ledger WHERE account_id = $1",
      [supplier.accountId],
    );
    expect(balance).toMatchObject({ pendingPayoutMicro: 0n, paidMicro: 15_000_000n });
    expect(balance.availableMicro + balance.paidMicro).toBe(BigInt(rows[0]!.total));
    const list = await call("GET", "/v1/peer/withdrawals", supplier.apiKey);
    expect(list.body.withdrawals[0]).toMatchObject({ status: "paid", txHash: approved.body.payout.txHash });
    expect(await verifyAuditChain(db)).toMatchObject({ ok: true });
  });
});
