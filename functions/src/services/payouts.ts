/**
 * The payout executor (docs/adr/0014-withdrawals-and-payouts.md): approved withdrawals become USDC
 * transfers from the treasury wallet on Base. Idempotent across crashes: the signed transaction and
 * its nonce are committed before the broadcast, and a recorded payout is only ever reconciled
 * (receipt, mempool, re-send of the same signed bytes), never signed again while it could still land.
 */
import {
  type Account,
  type Address,
  type Chain,
  createPublicClient,
  createWalletClient,
  encodeFunctionData,
  erc20Abi,
  type Hex,
  isAddress,
  keccak256,
  type PublicClient,
  TransactionNotFoundError,
  TransactionReceiptNotFoundError,
  type Transport,
  type WalletClient,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { type Pool, type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import { keys } from "../../../shared/keys.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import type { Config } from "../config.ts";
import { appendAudit } from "./audit.ts";
import { baseChain } from "./base-chain.ts";
import {
  broadcastRecorded,
  recordPayoutConfirmed,
  recordPayoutFailed,
  shortError,
} from "./payout-records.ts";
import { advanceSolanaPayout, type SolanaTreasury } from "./payouts-solana.ts";

export interface Treasury {
  client: PublicClient<Transport, Chain>;
  wallet: WalletClient<Transport, Chain, Account>;
  usdc: Address;
  confirmations: number;
}

/** The treasury from config, null when payouts are not configured (approved payouts then wait queued). */
export function treasuryFromConfig(config: Config): Treasury | null {
  const rpcUrl = config.PAYOUT_BASE_RPC_URL ?? config.X402_BASE_RPC_URL;
  const key = config.PAYOUT_TREASURY_KEY;
  if (
    !rpcUrl ||
    !key ||
    !/^0x[0-9a-fA-F]{64}$/.test(key) ||
    !isAddress(config.X402_BASE_USDC, { strict: false })
  )
    return null;
  const { chain, transport } = baseChain(config.X402_BASE_CHAIN_ID, rpcUrl);
  return {
    // cacheTime 0: viem otherwise caches the block number for 4 s and confirmations lag behind.
    client: createPublicClient({ chain, transport, pollingInterval: 1_000, cacheTime: 0 }),
    wallet: createWalletClient({ account: privateKeyToAccount(key as Hex), chain, transport }),
    usdc: config.X402_BASE_USDC as Address,
    confirmations: config.PAYOUT_CONFIRMATIONS,
  };
}

type PayoutRow = {
  withdrawal_id: string;
  network: "base" | "solana";
  to_address: string;
  amount_micro: string;
  status: "queued" | "signed" | "broadcast" | "confirmed" | "failed";
  tx_nonce: string | null;
  tx_hash: string | null;
  raw_tx: string | null;
  account_id: string;
};

export type PayoutOutcome = {
  withdrawalId: string;
  status: "queued" | "signed" | "broadcast" | "confirmed" | "failed" | "skipped";
  txHash?: string | null;
  confirmations?: number;
  reason?: string;
};

async function loadPayout(db: Queryable, withdrawalId: string, lock = false): Promise<PayoutRow | undefined> {
  const { rows } = await db.query<PayoutRow>(
    `SELECT p.withdrawal_id, p.network, p.to_address, p.amount_micro::text, p.status, p.tx_nonce::text, p.tx_hash,
            p.raw_tx, w.account_id
       FROM payouts p JOIN withdrawals w ON w.id = p.withdrawal_id
      WHERE p.withdrawal_id = $1${lock ? " FOR UPDATE OF p" : ""}`,
    [withdrawalId],
  );
  return rows[0];
}

/** Signs the transfer under the treasury's nonce lock and commits it before anything is sent. */
async function signAndRecord(db: Pool, t: Treasury, withdrawalId: string): Promise<PayoutRow | undefined> {
  const from = t.wallet.account.address;
  return withTransaction(db, async (tx) => {
    const row = await loadPayout(tx, withdrawalId, true);
    if (row?.status !== "queued") return row; // another executor got here first
    await tx.query(
      "INSERT INTO treasury_nonces (address, next_nonce) VALUES ($1, 0) ON CONFLICT DO NOTHING",
      [from.toLowerCase()],
    );
    const { rows } = await tx.query<{ next_nonce: string }>(
      "SELECT next_nonce FROM treasury_nonces WHERE address = $1 FOR UPDATE",
      [from.toLowerCase()],
    );
    // The chain's pending count covers sends by anything else; ours covers signed-but-unsent payouts.
    const pending = await t.client.getTransactionCount({ address: from, blockTag: "pending" });
    const nonce = Math.max(pending, Number(rows[0]?.next_nonce ?? 0));
    const request = await t.wallet.prepareTransactionRequest({
      account: t.wallet.account,
      chain: t.wallet.chain,
      to: t.usdc,
      data: encodeFunctionData({
        abi: erc20Abi,
        functionName: "transfer",
        args: [row.to_address as Address, BigInt(row.amount_micro)],
      }),
      nonce,
    });
    const raw = await t.wallet.signTransaction(request as never);
    const txHash = keccak256(raw);
    await tx.query(
      `UPDATE payouts SET status = 'signed', from_address = $2, tx_nonce = $3, tx_hash = $4, raw_tx = $5,
              last_error = NULL, updated_at = now()
        WHERE withdrawal_id = $1`,
      [withdrawalId, from.toLowerCase(), nonce, txHash, raw],
    );
    await tx.query("UPDATE treasury_nonces SET next_nonce = $2, updated_at = now() WHERE address = $1", [
      from.toLowerCase(),
      nonce + 1,
    ]);
    await appendAudit(tx, {
      actor: "payout-executor",
      action: "payout.sign",
      subject: withdrawalId,
      detail: { from, to: row.to_address, amountMicro: row.amount_micro, nonce, txHash },
    });
    return { ...row, status: "signed", tx_nonce: String(nonce), tx_hash: txHash, raw_tx: raw };
  });
}

async function broadcast(db: Queryable, t: Treasury, row: PayoutRow): Promise<void> {
  // Already in the mempool: a re-send of the same bytes.
  await broadcastRecorded(
    db,
    row.withdrawal_id,
    () => t.client.sendRawTransaction({ serializedTransaction: row.raw_tx as Hex }),
    /already known|known transaction|already imported/i,
  );
}

/** What became of a recorded transfer: mined (counted), in the mempool, re-sent as signed, or dead. */
async function reconcile(db: Pool, t: Treasury, row: PayoutRow): Promise<PayoutOutcome> {
  const hash = row.tx_hash as Hex;
  const out = (status: PayoutOutcome["status"], extra: Partial<PayoutOutcome> = {}): PayoutOutcome => ({
    withdrawalId: row.withdrawal_id,
    status,
    txHash: hash,
    ...extra,
  });
  try {
    const receipt = await t.client.getTransactionReceipt({ hash });
    if (receipt.status === "reverted") {
      await recordPayoutFailed(db, row, "reverted", { txHash: hash });
      return out("failed", { reason: "reverted" });
    }
    const latest = await t.client.getBlockNumber({ cacheTime: 0 });
    const confirmations = Number(latest - receipt.blockNumber + 1n);
    if (confirmations >= t.confirmations) {
      await recordPayoutConfirmed(db, row, {
        block: receipt.blockNumber,
        confirmations,
        evidence: { txHash: hash, blockNumber: String(receipt.blockNumber), confirmations },
      });
      return out("confirmed", { confirmations });
    }
    await db.query(
      "UPDATE payouts SET status = 'broadcast', block_number = $2, confirmations = $3, updated_at = now() WHERE withdrawal_id = $1",
      [row.withdrawal_id, String(receipt.blockNumber), confirmations],
    );
    return out("broadcast", { confirmations });
  } catch (err) {
    if (!(err instanceof TransactionReceiptNotFoundError)) throw err;
  }
  try {
    await t.client.getTransaction({ hash });
    return out("broadcast", { confirmations: 0 }); // in the mempool
  } catch (err) {
    if (!(err instanceof TransactionNotFoundError)) throw err;
  }
  // Unknown to the chain: the send never arrived or was dropped. Re-send the same signed bytes: the
  // same nonce and hash, so it can never pay twice.
  try {
    await broadcast(db, t, row);
    return out("broadcast", { confirmations: 0 });
  } catch (err) {
    if (!/nonce too low|nonce has already been used|nonce is too low/i.test(shortError(err))) throw err;
  }
  // Its nonce is used. Ours, after all (an RPC whose receipts lag behind its nonces)? Ask again.
  const mined = await t.client.getTransactionReceipt({ hash }).catch(() => null);
  if (mined) return reconcile(db, t, row);
  // Another transaction took the nonce and ours is not mined: it can never land. Sign anew.
  await withTransaction(db, async (tx) => {
    await tx.query(
      `UPDATE payouts SET status = 'queued', tx_hash = NULL, raw_tx = NULL, tx_nonce = NULL, from_address = NULL,
              last_error = 'nonce taken by another transaction; re-signing', updated_at = now()
        WHERE withdrawal_id = $1 AND tx_hash = $2`,
      [row.withdrawal_id, hash],
    );
    await appendAudit(tx, {
      actor: "payout-executor",
      action: "payout.resign",
      subject: row.withdrawal_id,
      detail: { droppedTxHash: hash, nonce: row.tx_nonce },
    });
  });
  return out("queued", { reason: "nonce_taken", txHash: null });
}

/**
 * Moves one approved payout forward as far as it can now: sign and record, broadcast, count
 * confirmations. Safe to call from any number of places at once and again after any crash.
 */
export async function advancePayout(
  deps: { db: Pool; redis: Pick<RedisClient, "get"> },
  treasury: Treasury | null,
  withdrawalId: string,
  opts: { waitMs?: number; solana?: SolanaTreasury | null } = {},
): Promise<PayoutOutcome> {
  if (await deps.redis.get(keys.killSwitch()))
    return { withdrawalId, status: "skipped", reason: "kill_switch" };
  if (await deps.redis.get(keys.loopPaused("payouts")))
    return { withdrawalId, status: "skipped", reason: "paused" };
  let row = await loadPayout(deps.db, withdrawalId);
  if (!row) return { withdrawalId, status: "skipped", reason: "no_payout" };
  if (row.status === "confirmed" || row.status === "failed")
    return { withdrawalId, status: row.status, txHash: row.tx_hash };
  if (row.network === "solana") {
    // docs/adr/0019: the same guarantees on Solana, by signature and blockhash expiry.
    if (!opts.solana) return { withdrawalId, status: "queued", reason: "solana_treasury_not_configured" };
    return advanceSolanaPayout(deps.db, opts.solana, withdrawalId, opts);
  }
  if (!treasury) return { withdrawalId, status: "queued", reason: "treasury_not_configured" };
  if (row.status === "queued") {
    row = await signAndRecord(deps.db, treasury, withdrawalId);
    if (row?.status !== "signed") return advancePayout(deps, treasury, withdrawalId, opts);
    try {
      await broadcast(deps.db, treasury, row);
    } catch (err) {
      return { withdrawalId, status: "signed", txHash: row.tx_hash, reason: shortError(err) };
    }
  }
  let outcome = await reconcile(deps.db, treasury, row);
  if (outcome.status === "broadcast" && opts.waitMs && outcome.txHash) {
    await treasury.client
      .waitForTransactionReceipt({
        hash: outcome.txHash as Hex,
        confirmations: treasury.confirmations,
        timeout: opts.waitMs,
        pollingInterval: 250,
      })
      .catch(() => {});
    outcome = await reconcile(deps.db, treasury, row);
  }
  return outcome;
}

/** Every open payout (queued, signed, broadcast), oldest first, moved forward; the payouts job. */
export async function advanceOpenPayouts(
  deps: { db: Pool; redis: Pick<RedisClient, "get"> },
  treasury: Treasury | null,
  limit: number,
  solana: SolanaTreasury | null = null,
): Promise<PayoutOutcome[]> {
  // A network without a configured treasury is skipped, so its queue cannot starve the other's.
  const networks = [...(treasury ? ["base"] : []), ...(solana ? ["solana"] : [])];
  const { rows } = await deps.db.query<{ withdrawal_id: string }>(
    `SELECT withdrawal_id FROM payouts WHERE status IN ('queued', 'signed', 'broadcast') AND network = ANY($2)
      ORDER BY created_at LIMIT $1`,
    [limit, networks],
  );
  const out: PayoutOutcome[] = [];
  for (const r of rows) {
    try {
      out.push(await advancePayout(deps, treasury, r.withdrawal_id, { solana }));
    } catch (err) {
      out.push({ withdrawalId: r.withdrawal_id, status: "signed", reason: shortError(err) });
    }
  }
  return out;
}
