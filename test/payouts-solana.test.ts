// Solana payouts (docs/adr/0019) on the litesvm RPC stand-in (test/chains/solana-rpc.ts): the API
// in workerd pays an approved withdrawal to a Solana wallet in SPL USDC from the Solana treasury,
// and the executor pays exactly once across a crash before or after the broadcast, and across the
// blockhash expiring (re-signed only when the old transaction can no longer land).
import { generateKeyPairSync } from "node:crypto";
import { type Address, generateKeyPairSigner, getBase58Decoder } from "@solana/kit";
import { findAssociatedTokenPda, getTokenDecoder, TOKEN_PROGRAM_ADDRESS } from "@solana-program/token";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../functions/src/config.ts";
import { verifyAuditChain } from "../functions/src/services/audit-chain.ts";
import { supplierBalance, unbalancedTransactions } from "../functions/src/services/ledger.ts";
import { advancePayout } from "../functions/src/services/payouts.ts";
import { type SolanaTreasury, solanaTreasuryFromConfig } from "../functions/src/services/payouts-solana.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { upstashRedis } from "../shared/redis.ts";
import { type SolanaTestRpc, startSolanaTestRpc } from "./chains/solana-rpc.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";
import { approvedWithdrawal, payableSupplier } from "./helpers/payouts.ts";

const e = stateEnv();
const pool = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL, e.UPSTASH_REDIS_REST_TOKEN);

let chain: SolanaTestRpc;
let api: Api;
let treasury: SolanaTreasury;

/** A fresh ed25519 keypair as the 64 bytes (seed || public key) Solana wallets export, base58. */
function newSolanaSecret(): string {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const seed = privateKey.export({ format: "der", type: "pkcs8" }).subarray(-32);
  const pub = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  return getBase58Decoder().decode(new Uint8Array([...seed, ...pub]));
}

beforeAll(async () => {
  chain = await startSolanaTestRpc();
  const key = newSolanaSecret();
  const vars = { PAYOUT_SOLANA_RPC_URL: chain.url, PAYOUT_SOLANA_TREASURY_KEY: key };
  treasury = (await solanaTreasuryFromConfig({
    ...vars,
    X402_SOLANA_USDC_MINT: chain.usdcMint,
    PAYOUT_SOLANA_COMMITMENT: "finalized",
  } as unknown as Config))!;
  chain.airdrop(treasury.signer.address, 10_000_000_000n);
  await chain.setTokenBalance(treasury.signer.address, chain.usdcMint, 1_000_000_000n);
  api = await startApi({ ...stateVars(e), ...vars }, { tmp: e.PEERPROXY_TEST_TMP });
}, 90_000);

afterAll(async () => {
  await api?.stop();
  await chain?.close();
  await pool.end();
});

async function usdcOf(owner: Address): Promise<bigint> {
  const [ata] = await findAssociatedTokenPda({
    owner,
    mint: chain.usdcMint,
    tokenProgram: TOKEN_PROGRAM_ADDRESS,
  });
  const account = chain.svm.getAccount(ata);
  return account.exists ? getTokenDecoder().decode(account.data).amount : 0n;
}

/** A supplier with `earnedMicro` payable and a fresh Solana wallet (no token account yet) out of cooling. */
const supplierWithWallet = async (earnedMicro: bigint) =>
  payableSupplier(pool, {
    earnedMicro,
    network: "solana",
    wallet: (await generateKeyPairSigner()).address,
    namePrefix: "sol",
  });

/** An approved withdrawal of `amount` (the payout row queued), without running the executor. */
async function approved(amount: bigint) {
  const s = await supplierWithWallet(amount);
  return { s, id: await approvedWithdrawal(pool, s, amount) };
}

const sends = (t: SolanaTreasury, mode: "crash_before" | "crash_after" | "count", counter: { n: number }) =>
  ({
    ...t,
    async send(wire: string) {
      counter.n++;
      if (mode === "crash_before") throw new Error("process killed");
      await t.send(wire);
      if (mode === "crash_after") throw new Error("connection reset");
    },
  }) as SolanaTreasury;

const recorded = async (id: string) =>
  (
    await pool.query<{ tx_hash: string; last_valid_block_height: string }>(
      "SELECT tx_hash, last_valid_block_height::text FROM payouts WHERE withdrawal_id = $1",
      [id],
    )
  ).rows[0]!;

const payoutTxns = async (id: string) =>
  (
    await pool.query<{ n: string }>(
      "SELECT count(*)::text AS n FROM ledger_txns WHERE kind = 'payout' AND ref = $1",
      [id],
    )
  ).rows[0]!.n;

describe("Solana payouts on litesvm", () => {
  it("a human approves in the API and the Solana treasury pays exactly the amount into a new token account", async () => {
    const s = await supplierWithWallet(25_000_000n);
    const human = await createAccountWithKey(pool, { name: "sol-human", kind: "operator" });
    const post = (path: string, key: string, body?: unknown) =>
      fetch(`${api.url}${path}`, {
        method: "POST",
        headers: { "X-API-Key": key, ...(body ? { "content-type": "application/json" } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    const res = await post("/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "12000000" });
    expect(res.status).toBe(201);
    const wd = (await res.json()) as { id: string; approvalId: string; network: string };
    expect(wd.network).toBe("solana");
    const before = await usdcOf(treasury.signer.address);
    const ok = await post(`/v1/admin/approvals/${wd.approvalId}/approve`, human.apiKey);
    const body = (await ok.json()) as { payout: { status: string; txHash: string } };
    expect(ok.status, JSON.stringify(body)).toBe(200);
    expect(body.payout).toMatchObject({ status: "confirmed", txHash: (await recorded(wd.id)).tx_hash });
    expect(await usdcOf(s.wallet)).toBe(12_000_000n);
    expect(before - (await usdcOf(treasury.signer.address))).toBe(12_000_000n);
    expect(await supplierBalance(pool, s.accountId)).toEqual({
      availableMicro: 13_000_000n,
      pendingPayoutMicro: 0n,
      paidMicro: 12_000_000n,
    });
    expect(await unbalancedTransactions(pool)).toEqual([]);
    expect(await verifyAuditChain(pool)).toMatchObject({ ok: true });
  });

  it("a crash after recording and before the broadcast re-sends the same signed bytes: paid once", async () => {
    const { s, id } = await approved(10_000_000n);
    const n = { n: 0 };
    const first = await advancePayout({ db: pool, redis }, null, id, {
      solana: sends(treasury, "crash_before", n),
    });
    expect(first.status).toBe("signed");
    const sig = (await recorded(id)).tx_hash;
    expect(await usdcOf(s.wallet)).toBe(0n);
    const second = await advancePayout({ db: pool, redis }, null, id, { solana: treasury });
    expect(second).toMatchObject({ status: "confirmed", txHash: sig });
    expect((await advancePayout({ db: pool, redis }, null, id, { solana: treasury })).status).toBe(
      "confirmed",
    );
    expect(await usdcOf(s.wallet)).toBe(10_000_000n);
    expect(await payoutTxns(id)).toBe("1");
  });

  it("a crash after the broadcast reconciles by signature and sends nothing more: paid once", async () => {
    const { s, id } = await approved(10_000_000n);
    const n = { n: 0 };
    expect(
      (await advancePayout({ db: pool, redis }, null, id, { solana: sends(treasury, "crash_after", n) }))
        .status,
    ).toBe("signed");
    expect(await usdcOf(s.wallet)).toBe(10_000_000n);
    const counted = { n: 0 };
    const again = await advancePayout({ db: pool, redis }, null, id, {
      solana: sends(treasury, "count", counted),
    });
    expect(again).toMatchObject({ status: "confirmed", txHash: (await recorded(id)).tx_hash });
    expect(counted.n).toBe(0);
    expect(await usdcOf(s.wallet)).toBe(10_000_000n);
    expect(await payoutTxns(id)).toBe("1");
  });

  it("a landed transfer whose blockhash has since expired is found by signature, never re-signed", async () => {
    const { s, id } = await approved(10_000_000n);
    await advancePayout({ db: pool, redis }, null, id, { solana: sends(treasury, "crash_after", { n: 0 }) });
    const sig = (await recorded(id)).tx_hash;
    chain.advanceBlocks(300);
    const again = await advancePayout({ db: pool, redis }, null, id, { solana: treasury });
    expect(again).toMatchObject({ status: "confirmed", txHash: sig });
    expect(await usdcOf(s.wallet)).toBe(10_000_000n);
    const resigned = await pool.query(
      "SELECT 1 FROM audit_log WHERE action = 'payout.resign' AND subject = $1",
      [id],
    );
    expect(resigned.rows).toEqual([]);
  });

  it("a transfer never sent whose blockhash expired is signed anew (audited) and pays once", async () => {
    const { s, id } = await approved(10_000_000n);
    await advancePayout({ db: pool, redis }, null, id, { solana: sends(treasury, "crash_before", { n: 0 }) });
    const old = await recorded(id);
    chain.advanceBlocks(Number(old.last_valid_block_height) + 10);
    // The old bytes can no longer land: the stand-in refuses them like a real cluster would.
    const counted = { n: 0 };
    const out = await advancePayout({ db: pool, redis }, null, id, {
      solana: sends(treasury, "count", counted),
    });
    expect(out.status).toBe("confirmed");
    expect(out.txHash).not.toBe(old.tx_hash);
    expect(counted.n).toBe(1);
    expect(await usdcOf(s.wallet)).toBe(10_000_000n);
    expect(await payoutTxns(id)).toBe("1");
    const { rows } = await pool.query<{ detail: { droppedSignature: string } }>(
      "SELECT detail FROM audit_log WHERE action = 'payout.resign' AND subject = $1",
      [id],
    );
    expect(rows.map((r) => r.detail.droppedSignature)).toEqual([old.tx_hash]);
  });
});
