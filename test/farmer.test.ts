// Modem farmers on the local network (issue 10, ADR 0017): an operator registers two production
// modem exits (tinyproxy stand-ins) for two farmers through the API; a reseller's mbl pool key
// sends traffic through the real gateway-node to each; the gateway counts each exit's bytes; the
// API's own cron accrues them at the mobile-class rate (farmer B) and at an operator's override
// (farmer A); farmer A withdraws, an ops-agent cannot approve, a human does, and A's wallet on
// anvil grows by exactly the amount. Farmer B's key sees none of it and cannot withdraw it.
import { parseAbi } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EvmChain, startEvmChain } from "../dev/chains/evm.ts";
import { verifyAuditChain } from "../functions/src/services/audit-chain.ts";
import { supplierBalance, unbalancedTransactions } from "../functions/src/services/ledger.ts";
import { loadGatewayConfig } from "../gateway-node/config.ts";
import { type Gateway, startGateway } from "../gateway-node/gateway.ts";
import {
  curlStatusAndSize,
  type Modem,
  startTargets,
  startTinyproxy,
  type Targets,
} from "../gateway-node/testing.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { ownRedisState } from "./helpers/env.ts";
import { apiCaller } from "./helpers/payouts.ts";

// A Redis of its own: this file runs the API cron, which would delist what other files list.
const state = await ownRedisState("farmer");
const e = state.env;
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
const redis = tcpRedis(e.REDIS_URL);
const balanceOf = parseAbi(["function balanceOf(address) view returns (uint256)"]);
// Countries no other test uses, so each key can only reach its own farmer's modem.
const letter = () => "abcdefghijklmnopqrstuvwxyz"[Math.floor(Math.random() * 26)];
const countryA = `q${letter()}`;
let countryB = `x${letter()}`;
const BYTES = 3 * 1024 * 1024;

let chain: EvmChain;
let api: Api;
let gw: Gateway;
let targets: Targets;
const modems: Modem[] = [];
const exitIds: string[] = [];

beforeAll(async () => {
  if (countryB === countryA) countryB = "xz";
  chain = await startEvmChain();
  const treasuryKey = generatePrivateKey();
  const treasury = privateKeyToAccount(treasuryKey).address;
  await chain.testClient.setBalance({ address: treasury, value: 10n ** 20n });
  await chain.mint(treasury, 1_000_000_000n);
  [api, targets] = await Promise.all([
    startApi(
      {
        ...stateVars(e),
        PAYOUT_BASE_RPC_URL: chain.rpcUrl,
        PAYOUT_TREASURY_KEY: treasuryKey,
        PAYOUT_CONFIRMATIONS: "1",
        X402_BASE_USDC: chain.usdc,
      },
      { tmp: e.PEERPROXY_TEST_TMP },
    ),
    startTargets(),
  ]);
  modems.push(await startTinyproxy(), await startTinyproxy());
  gw = await startGateway(
    loadGatewayConfig({
      REDIS_URL: e.REDIS_URL,
      RELAY_SHARED_SECRET: "farmer-test-relay-secret-0123456789",
      GATEWAY_HTTP_PORT: "0",
      GATEWAY_SOCKS_PORT: "0",
      GATEWAY_ADMIN_PORT: "0",
      GATEWAY_ALLOW_PRIVATE_TARGETS: "1",
      GATEWAY_FLUSH_MS: "200",
    }),
    { redis },
  );
}, 120_000);

afterAll(async () => {
  for (const id of exitIds) {
    await delistEndpoint(redis, id).catch(() => {});
    await redis.del(keys.deviceBytes(id), keys.deviceBytesFlushSeq(id));
    await redis.raw.srem(keys.unsettledModems(), id);
  }
  await gw?.close();
  await Promise.all([...modems.map((m) => m.stop()), targets?.stop()]);
  await api?.stop();
  await chain?.stop();
  await redis.close();
  await db.end();
  await state.stop();
});

const call = apiCaller(() => api.url);

describe("modem farmers", () => {
  it("a farmer's modem serves traffic, accrues at the mobile rate (and its override), and is paid on anvil; another farmer cannot touch it", async () => {
    const human = await createAccountWithKey(db, { name: `farm-op-${randomHex(3)}`, kind: "operator" });
    const agent = await createAccountWithKey(db, { name: `farm-ops-${randomHex(3)}`, kind: "ops" });
    const farmerA = await createAccountWithKey(db, { name: `farm-a-${randomHex(3)}`, kind: "farmer" });
    const farmerB = await createAccountWithKey(db, { name: `farm-b-${randomHex(3)}`, kind: "farmer" });
    const customer = await createAccountWithKey(db, { name: `farm-c-${randomHex(3)}`, kind: "reseller" });

    // Only a farmer (or supplier) account can own a modem exit; only a human sets a rate override.
    const notFarmer = await call("POST", "/v1/admin/modem-exits", human.apiKey, {
      host: "127.0.0.1",
      port: modems[0]!.port,
      country: countryA,
      farmerAccountId: customer.accountId,
    });
    expect(notFarmer.status).toBe(409);
    expect(notFarmer.body.error.message).toMatch(
      /farmerAccountId: .* is a reseller account; a modem exit belongs to a farmer/,
    );
    const agentRate = await call(
      "PUT",
      `/v1/admin/accounts/${farmerA.accountId}/earnings-rates`,
      agent.apiKey,
      {
        overrides: { mobile: "5000" },
      },
    );
    expect(agentRate.status).toBe(403);
    const rate = await call("PUT", `/v1/admin/accounts/${farmerA.accountId}/earnings-rates`, human.apiKey, {
      overrides: { mobile: "5000" },
    });
    expect(rate.status, JSON.stringify(rate.body)).toBe(200);
    expect(rate.body.rates.mobile).toBe("5000");
    const audited = await db.query(
      "SELECT actor, detail FROM audit_log WHERE action = 'earnings.rates_override' AND subject = $1",
      [farmerA.accountId],
    );
    expect(audited.rows).toEqual([
      { actor: human.apiKeyId, detail: { before: null, after: { mobile: "5000" } } },
    ]);

    for (const [i, [farmer, country]] of [
      [farmerA, countryA],
      [farmerB, countryB],
    ].entries()) {
      const r = await call("POST", "/v1/admin/modem-exits", human.apiKey, {
        host: "127.0.0.1",
        port: modems[i]!.port,
        country,
        farmerAccountId: (farmer as { accountId: string }).accountId,
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(r.body.farmerAccountId).toBe((farmer as { accountId: string }).accountId);
      exitIds.push(r.body.id);
    }

    // Traffic through the real gateway to each farmer's modem.
    for (const country of [countryA, countryB]) {
      const key = await call("POST", "/v1/reseller/pool-keys", customer.apiKey, {
        tier: "mbl",
        country,
        capBytes: 100_000_000,
      });
      expect(key.status, JSON.stringify(key.body)).toBe(201);
      const got = await curlStatusAndSize(
        `http://${key.body.username}:${key.body.secret}@127.0.0.1:${gw.httpPort}`,
        `http://127.0.0.1:${targets.httpPort}/bytes/${BYTES}`,
      );
      expect(got).toBe(`200 ${BYTES}`);
    }
    const counted = async (id: string) => {
      const h = await redis.hgetall(keys.deviceBytes(id));
      return Number(h.up ?? 0) + Number(h.down ?? 0);
    };
    for (const id of exitIds)
      await expect.poll(() => counted(id), { timeout: 10_000, interval: 100 }).toBeGreaterThanOrEqual(BYTES);

    // The API's cron accrues both: A at its override, B at the mobile-class settings rate.
    const cron = `${api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`;
    const rows = async () =>
      (
        await db.query<{
          account_id: string;
          modem_exit_id: string;
          bytes: string;
          rate: string;
          amount: string;
        }>(
          `SELECT account_id, modem_exit_id, sum(bytes)::text AS bytes, max(rate_micro_per_gb)::text AS rate,
                  sum(amount_micro)::text AS amount
             FROM earnings_ledger WHERE modem_exit_id = ANY($1) GROUP BY 1, 2 ORDER BY 1`,
          [exitIds],
        )
      ).rows;
    // Until each exit's watermark reached its counters (no traffic flows any more, so this is final).
    const settled = async () => {
      const { rows: w } = await db.query<{ id: string; settled: string }>(
        "SELECT id, settled_bytes::text AS settled FROM modem_exits WHERE id = ANY($1)",
        [exitIds],
      );
      for (const r of w) if (Number(r.settled) !== (await counted(r.id))) return false;
      return w.length === 2;
    };
    await expect
      .poll(
        async () => {
          expect((await fetch(cron)).status).toBe(200);
          return settled();
        },
        { timeout: 30_000, interval: 500 },
      )
      .toBe(true);
    const mobileRate = (
      await db.query<{ v: { mobile: string } }>(
        "SELECT value AS v FROM settings WHERE key = 'earnings_per_gb'",
      )
    ).rows[0]!.v.mobile;
    const byAccount = new Map((await rows()).map((r) => [r.account_id, r]));
    const a = byAccount.get(farmerA.accountId)!;
    const b = byAccount.get(farmerB.accountId)!;
    expect(a.modem_exit_id).toBe(exitIds[0]);
    expect(a.rate).toBe("5000000000");
    expect(b.rate).toBe(String(Math.round(Number(mobileRate) * 1_000_000)));
    // Integer micro-USDC, rounded down once per exit (the carry is below one micro-USDC).
    for (const x of [a, b])
      expect(BigInt(x.amount)).toBe((BigInt(x.bytes) * BigInt(x.rate)) / 1_000_000_000n);
    const earnings = await call("GET", "/v1/peer/earnings", farmerA.apiKey);
    expect(BigInt(earnings.body.accruedMicro)).toBe(BigInt(a.amount));
    expect(earnings.body.devices.map((d: { deviceId: string }) => d.deviceId)).toEqual([exitIds[0]]);

    // Farmer A withdraws through the suppliers' routes.
    const walletA = privateKeyToAccount(generatePrivateKey()).address;
    const walletB = privateKeyToAccount(generatePrivateKey()).address;
    expect(
      (await call("PUT", "/v1/peer/wallet", farmerA.apiKey, { network: "base", address: walletA })).status,
    ).toBe(200);
    expect(
      (await call("PUT", "/v1/peer/wallet", farmerB.apiKey, { network: "base", address: walletB })).status,
    ).toBe(200);
    await db.query(
      "UPDATE payout_wallets SET payable_from = now() - interval '1 second' WHERE account_id = ANY($1)",
      [[farmerA.accountId, farmerB.accountId]],
    );
    const wd = await call("POST", "/v1/peer/withdrawals", farmerA.apiKey, { amountMicroUsdc: "12000000" });
    expect(wd.status, JSON.stringify(wd.body)).toBe(201);

    // Farmer B: sees none of A's money, cannot withdraw it, cannot approve it.
    const bEarnings = await call("GET", "/v1/peer/earnings", farmerB.apiKey);
    expect(BigInt(bEarnings.body.accruedMicro)).toBe(BigInt(b.amount));
    expect(bEarnings.body.devices.map((d: { deviceId: string }) => d.deviceId)).toEqual([exitIds[1]]);
    expect((await call("GET", "/v1/peer/withdrawals", farmerB.apiKey)).body.withdrawals).toEqual([]);
    const steal = await call("POST", "/v1/peer/withdrawals", farmerB.apiKey, { amountMicroUsdc: "12000000" });
    expect(steal.status).toBe(409);
    expect(steal.body.error.code).toBe("E_INSUFFICIENT_BALANCE");
    expect(
      (await call("POST", `/v1/admin/approvals/${wd.body.approvalId}/approve`, farmerB.apiKey)).status,
    ).toBe(403);
    expect(
      (await call("POST", `/v1/admin/approvals/${wd.body.approvalId}/approve`, agent.apiKey)).status,
    ).toBe(403);

    const usdc = (address: `0x${string}`) =>
      chain.publicClient.readContract({
        address: chain.usdc,
        abi: balanceOf,
        functionName: "balanceOf",
        args: [address],
      });
    const before = await usdc(walletA);
    const approved = await call("POST", `/v1/admin/approvals/${wd.body.approvalId}/approve`, human.apiKey);
    expect(approved.status, JSON.stringify(approved.body)).toBe(200);
    expect(approved.body.payout).toMatchObject({ status: "confirmed" });
    expect((await usdc(walletA)) - before).toBe(12_000_000n);
    expect(await usdc(walletB)).toBe(0n);

    expect(await supplierBalance(db, farmerA.accountId)).toEqual({
      availableMicro: BigInt(a.amount) - 12_000_000n,
      pendingPayoutMicro: 0n,
      paidMicro: 12_000_000n,
    });
    expect(await unbalancedTransactions(db)).toEqual([]);
    expect(await verifyAuditChain(db)).toMatchObject({ ok: true });
  });
});
