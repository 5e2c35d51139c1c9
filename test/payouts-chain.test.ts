// Supplier payouts on a real chain: the API in workerd pays approved withdrawals in USDC from a
// treasury wallet on anvil, and the executor never pays twice across a crash at any point.
import { type Address, type Hex, parseAbi } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EvmChain, startEvmChain } from "../dev/chains/evm.ts";
import type { Config } from "../functions/src/config.ts";
import { verifyAuditChain } from "../functions/src/services/audit-chain.ts";
import { supplierBalance, unbalancedTransactions } from "../functions/src/services/ledger.ts";
import { advancePayout, type Treasury, treasuryFromConfig } from "../functions/src/services/payouts.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { upstashRedis } from "../shared/redis.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";
import { approvedWithdrawal, payableSupplier } from "./helpers/payouts.ts";

const e = stateEnv();
const pool = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL, e.UPSTASH_REDIS_REST_TOKEN);
const balanceOf = parseAbi(["function balanceOf(address) view returns (uint256)"]);

let chain: EvmChain;
let api: Api;
let treasuryKey: Hex;
let treasury: Treasury;

beforeAll(async () => {
  chain = await startEvmChain();
  treasuryKey = generatePrivateKey();
  const address = privateKeyToAccount(treasuryKey).address;
  await chain.testClient.setBalance({ address, value: 10n ** 20n });
  await chain.mint(address, 1_000_000_000n);
  const vars = {
    PAYOUT_BASE_RPC_URL: chain.rpcUrl,
    PAYOUT_TREASURY_KEY: treasuryKey,
    PAYOUT_CONFIRMATIONS: "1",
    X402_BASE_USDC: chain.usdc,
  };
  treasury = treasuryFromConfig({
    ...vars,
    PAYOUT_CONFIRMATIONS: 1,
    X402_BASE_CHAIN_ID: chain.chain.id,
  } as unknown as Config)!;
  api = await startApi({ ...stateVars(e), ...vars }, { tmp: e.PEERPROXY_TEST_TMP });
});

afterAll(async () => {
  await api?.stop();
  await chain?.stop();
  await pool.end();
});

const usdcOf = (address: Address) =>
  chain.publicClient.readContract({
    address: chain.usdc,
    abi: balanceOf,
    functionName: "balanceOf",
    args: [address],
  });

/** A supplier with `earnedMicro` payable and a fresh Base wallet already out of cooling. */
const supplierWithWallet = (earnedMicro: bigint) =>
  payableSupplier(pool, {
    earnedMicro,
    network: "base",
    wallet: privateKeyToAccount(generatePrivateKey()).address,
    namePrefix: "s",
  });

const post = (path: string, apiKey: string, body?: unknown) =>
  fetch(`${api.url}${path}`, {
    method: "POST",
    headers: { "X-API-Key": apiKey, ...(body ? { "content-type": "application/json" } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });

describe("payouts on anvil", () => {
  it("an ops-agent cannot approve; a human approves and the treasury pays exactly the amount", async () => {
    const s = await supplierWithWallet(25_000_000n);
    const agent = await createAccountWithKey(pool, { name: "ops-agent", kind: "ops" });
    const human = await createAccountWithKey(pool, { name: "human", kind: "operator" });
    const res = await post("/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "12000000" });
    expect(res.status).toBe(201);
    const wd = (await res.json()) as { id: string; approvalId: string };
    expect((await post(`/v1/admin/approvals/${wd.approvalId}/approve`, agent.apiKey)).status).toBe(403);
    expect(await usdcOf(s.wallet)).toBe(0n);

    const ok = await post(`/v1/admin/approvals/${wd.approvalId}/approve`, human.apiKey);
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as { payout: { status: string; txHash: Hex; confirmations: number } };
    expect(body.payout).toMatchObject({ status: "confirmed", confirmations: 1 });
    expect(await usdcOf(s.wallet)).toBe(12_000_000n);
    const receipt = await chain.publicClient.getTransactionReceipt({ hash: body.payout.txHash });
    expect(receipt.status).toBe("success");

    const list = (await (
      await fetch(`${api.url}/v1/peer/withdrawals`, { headers: { "X-API-Key": s.apiKey } })
    ).json()) as {
      paidMicroUsdc: string;
      availableMicroUsdc: string;
      withdrawals: { status: string; txHash: string }[];
    };
    expect(list).toMatchObject({ paidMicroUsdc: "12000000", availableMicroUsdc: "13000000" });
    expect(list.withdrawals[0]).toMatchObject({ status: "paid", txHash: body.payout.txHash });
    expect(await unbalancedTransactions(pool)).toEqual([]);
    expect(await verifyAuditChain(pool)).toMatchObject({ ok: true });
  });

  it("a crash after recording and before the broadcast re-sends the same signed transfer: paid once", async () => {
    const s = await supplierWithWallet(10_000_000n);
    const id = await approvedWithdrawal(pool, s, 10_000_000n);
    // The process "dies" as it broadcasts: the signed transfer and its nonce are already committed.
    const crashing = {
      ...treasury,
      client: {
        ...treasury.client,
        sendRawTransaction: async () => {
          throw new Error("process killed");
        },
      },
    } as Treasury;
    const first = await advancePayout({ db: pool, redis }, crashing, id);
    expect(first.status).toBe("signed");
    const recorded = await pool.query<{ tx_hash: string; tx_nonce: string }>(
      "SELECT tx_hash, tx_nonce FROM payouts WHERE withdrawal_id = $1",
      [id],
    );
    expect(await usdcOf(s.wallet)).toBe(0n);

    const second = await advancePayout({ db: pool, redis }, treasury, id, { waitMs: 10_000 });
    expect(second).toMatchObject({ status: "confirmed", txHash: recorded.rows[0]!.tx_hash });
    const third = await advancePayout({ db: pool, redis }, treasury, id);
    expect(third.status).toBe("confirmed");
    expect(await usdcOf(s.wallet)).toBe(10_000_000n);
    expect(await supplierBalance(pool, s.accountId)).toEqual({
      availableMicro: 0n,
      pendingPayoutMicro: 0n,
      paidMicro: 10_000_000n,
    });
  });

  it("a crash after the broadcast and before recording it reconciles from the chain: paid once", async () => {
    const s = await supplierWithWallet(10_000_000n);
    const id = await approvedWithdrawal(pool, s, 10_000_000n);
    // The transfer reaches the chain, but the process dies before it learns so.
    const lost = {
      ...treasury,
      client: {
        ...treasury.client,
        sendRawTransaction: async (args: { serializedTransaction: Hex }) => {
          await treasury.client.sendRawTransaction(args);
          throw new Error("connection reset");
        },
      },
    } as Treasury;
    expect((await advancePayout({ db: pool, redis }, lost, id)).status).toBe("signed");
    expect(await usdcOf(s.wallet)).toBe(10_000_000n);
    // The payouts cron finds it signed, sees it mined, and records it without sending anything.
    const again = await advancePayout({ db: pool, redis }, treasury, id);
    expect(again.status).toBe("confirmed");
    expect(await usdcOf(s.wallet)).toBe(10_000_000n);
    const { rows } = await pool.query<{ n: string }>(
      "SELECT count(*)::text AS n FROM ledger_txns WHERE kind = 'payout' AND ref = $1",
      [id],
    );
    expect(rows[0]!.n).toBe("1");
  });
});
