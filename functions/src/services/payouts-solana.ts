/**
 * Solana payouts (docs/adr/0019-solana-payouts.md): an approved withdrawal to a Solana wallet becomes
 * an SPL USDC transferChecked from the Solana treasury to the wallet's associated token account
 * (created idempotently, the treasury paying its rent). Crash-safe like Base: the signed
 * transaction, its signature and its blockhash's lastValidBlockHeight are committed before the
 * broadcast; a recorded payout is reconciled by signature, re-sent as the same bytes while its
 * blockhash is valid, and signed anew only once the chain is past lastValidBlockHeight and the
 * signature is still unknown (it can then never land).
 */
import {
  type Address,
  appendTransactionMessageInstructions,
  createKeyPairSignerFromBytes,
  createSolanaRpc,
  createTransactionMessage,
  getBase58Encoder,
  getBase64EncodedWireTransaction,
  getSignatureFromTransaction,
  type KeyPairSigner,
  pipe,
  type Signature,
  setTransactionMessageFeePayerSigner,
  setTransactionMessageLifetimeUsingBlockhash,
  signTransactionMessageWithSigners,
} from "@solana/kit";
import {
  findAssociatedTokenPda,
  getCreateAssociatedTokenIdempotentInstruction,
  getTransferCheckedInstruction,
  TOKEN_PROGRAM_ADDRESS,
} from "@solana-program/token";
import { type Pool, type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import type { Config } from "../config.ts";
import { appendAudit } from "./audit.ts";
import {
  broadcastRecorded,
  recordPayoutConfirmed,
  recordPayoutFailed,
  shortError,
} from "./payout-records.ts";

export interface SolanaTreasury {
  signer: KeyPairSigner;
  mint: Address;
  commitment: "confirmed" | "finalized";
  rpc: ReturnType<typeof createSolanaRpc>;
  /** Sends base64 wire bytes (tests wrap it to play a crash around the broadcast). */
  send(wire: string): Promise<void>;
}

export type SolanaOutcome = {
  withdrawalId: string;
  status: "queued" | "signed" | "broadcast" | "confirmed" | "failed";
  txHash?: string | null;
  confirmations?: number;
  reason?: string;
};

type Row = {
  withdrawal_id: string;
  to_address: string;
  amount_micro: string;
  status: "queued" | "signed" | "broadcast" | "confirmed" | "failed";
  tx_hash: string | null;
  raw_tx: string | null;
  last_valid_block_height: string | null;
  account_id: string;
};

const USDC_DECIMALS = 6;

function keyBytes(key: string): Uint8Array | null {
  try {
    const trimmed = key.trim();
    const bytes = trimmed.startsWith("[")
      ? Uint8Array.from(JSON.parse(trimmed) as number[])
      : new Uint8Array(getBase58Encoder().encode(trimmed));
    return bytes.length === 64 ? bytes : null;
  } catch {
    return null;
  }
}

/** The Solana treasury from config; null when not configured (Solana payouts then wait queued). */
export async function solanaTreasuryFromConfig(config: Config): Promise<SolanaTreasury | null> {
  const url = config.PAYOUT_SOLANA_RPC_URL ?? config.X402_SOLANA_RPC_URL;
  const bytes = config.PAYOUT_SOLANA_TREASURY_KEY ? keyBytes(config.PAYOUT_SOLANA_TREASURY_KEY) : null;
  if (!url || !bytes) return null;
  const rpc = createSolanaRpc(url);
  return {
    signer: await createKeyPairSignerFromBytes(bytes),
    mint: config.X402_SOLANA_USDC_MINT as Address,
    commitment: config.PAYOUT_SOLANA_COMMITMENT,
    rpc,
    async send(wire) {
      await rpc
        .sendTransaction(wire as never, { encoding: "base64", preflightCommitment: "confirmed" })
        .send();
    },
  };
}

async function load(db: Queryable, withdrawalId: string, lock = false): Promise<Row | undefined> {
  const { rows } = await db.query<Row>(
    `SELECT p.withdrawal_id, p.to_address, p.amount_micro::text, p.status, p.tx_hash, p.raw_tx,
            p.last_valid_block_height::text, w.account_id
       FROM payouts p JOIN withdrawals w ON w.id = p.withdrawal_id
      WHERE p.withdrawal_id = $1 AND p.network = 'solana'${lock ? " FOR UPDATE OF p" : ""}`,
    [withdrawalId],
  );
  return rows[0];
}

/** Builds and signs the transfer under the payout's row lock and commits it before anything is sent. */
async function signAndRecord(db: Pool, t: SolanaTreasury, withdrawalId: string): Promise<Row | undefined> {
  return withTransaction(db, async (tx) => {
    const row = await load(tx, withdrawalId, true);
    if (row?.status !== "queued") return row;
    const owner = row.to_address as Address;
    const [[source], [destination], { value: latest }] = await Promise.all([
      findAssociatedTokenPda({ owner: t.signer.address, mint: t.mint, tokenProgram: TOKEN_PROGRAM_ADDRESS }),
      findAssociatedTokenPda({ owner, mint: t.mint, tokenProgram: TOKEN_PROGRAM_ADDRESS }),
      t.rpc.getLatestBlockhash({ commitment: "confirmed" }).send(),
    ]);
    const message = pipe(
      createTransactionMessage({ version: 0 }),
      (m) => setTransactionMessageFeePayerSigner(t.signer, m),
      (m) => setTransactionMessageLifetimeUsingBlockhash(latest, m),
      (m) =>
        appendTransactionMessageInstructions(
          [
            getCreateAssociatedTokenIdempotentInstruction({
              payer: t.signer,
              ata: destination,
              owner,
              mint: t.mint,
            }),
            getTransferCheckedInstruction({
              source,
              mint: t.mint,
              destination,
              authority: t.signer,
              amount: BigInt(row.amount_micro),
              decimals: USDC_DECIMALS,
            }),
          ],
          m,
        ),
    );
    const signed = await signTransactionMessageWithSigners(message);
    const signature = getSignatureFromTransaction(signed);
    const wire = getBase64EncodedWireTransaction(signed);
    await tx.query(
      `UPDATE payouts SET status = 'signed', from_address = $2, tx_hash = $3, raw_tx = $4,
              last_valid_block_height = $5, last_error = NULL, updated_at = now()
        WHERE withdrawal_id = $1`,
      [withdrawalId, t.signer.address, signature, wire, String(latest.lastValidBlockHeight)],
    );
    await appendAudit(tx, {
      actor: "payout-executor",
      action: "payout.sign",
      subject: withdrawalId,
      detail: {
        network: "solana",
        from: t.signer.address,
        to: owner,
        amountMicro: row.amount_micro,
        signature,
        lastValidBlockHeight: String(latest.lastValidBlockHeight),
      },
    });
    return {
      ...row,
      status: "signed",
      tx_hash: signature,
      raw_tx: wire,
      last_valid_block_height: String(latest.lastValidBlockHeight),
    };
  });
}

async function broadcast(db: Queryable, t: SolanaTreasury, row: Row): Promise<void> {
  // The same bytes landed before (a re-send after a lost answer).
  await broadcastRecorded(
    db,
    row.withdrawal_id,
    () => t.send(row.raw_tx!),
    /already (been )?processed|AlreadyProcessed/i,
  );
}

const RANK = { processed: 0, confirmed: 1, finalized: 2 } as const;

/** What became of a recorded transfer: landed (counted), re-sent as signed, or expired (signed anew). */
async function reconcile(db: Pool, t: SolanaTreasury, row: Row): Promise<SolanaOutcome> {
  const signature = row.tx_hash as Signature;
  const out = (status: SolanaOutcome["status"], extra: Partial<SolanaOutcome> = {}): SolanaOutcome => ({
    withdrawalId: row.withdrawal_id,
    status,
    txHash: signature,
    ...extra,
  });
  const status = async () =>
    (await t.rpc.getSignatureStatuses([signature], { searchTransactionHistory: true }).send()).value[0] ??
    null;
  let s = await status();
  if (s) {
    if (s.err) {
      await recordPayoutFailed(db, row, `failed on-chain: ${JSON.stringify(s.err)}`.slice(0, 300), {
        network: "solana",
        signature,
      });
      return out("failed", { reason: "failed_on_chain" });
    }
    if (s.confirmationStatus && RANK[s.confirmationStatus] >= RANK[t.commitment]) {
      await recordPayoutConfirmed(db, row, {
        block: BigInt(s.slot),
        confirmations: null,
        evidence: { network: "solana", signature, slot: String(s.slot) },
      });
      return out("confirmed");
    }
    await db.query(
      "UPDATE payouts SET status = 'broadcast', block_number = $2, updated_at = now() WHERE withdrawal_id = $1 AND status IN ('signed', 'broadcast')",
      [row.withdrawal_id, String(s.slot)],
    );
    return out("broadcast", {
      reason: `seen ${s.confirmationStatus ?? "processed"}, waiting for ${t.commitment}`,
    });
  }
  // Unknown to the chain. While its blockhash is valid, only the same bytes may go out again.
  const height = await t.rpc.getBlockHeight({ commitment: "confirmed" }).send();
  if (height <= BigInt(row.last_valid_block_height ?? "0")) {
    try {
      await broadcast(db, t, row);
    } catch (err) {
      return out("signed", { reason: shortError(err) });
    }
    // Landed already (a fast cluster)? Count it now; otherwise the next pass does.
    return (await status()) ? reconcile(db, t, row) : out("broadcast");
  }
  // Expired: it can never land now. Ask once more (a status the node served late), then sign anew.
  s = await status();
  if (s) return reconcile(db, t, row);
  await withTransaction(db, async (tx) => {
    const { rowCount } = await tx.query(
      `UPDATE payouts SET status = 'queued', tx_hash = NULL, raw_tx = NULL, last_valid_block_height = NULL,
              from_address = NULL, last_error = 'blockhash expired before the transfer landed; re-signing',
              updated_at = now()
        WHERE withdrawal_id = $1 AND tx_hash = $2`,
      [row.withdrawal_id, signature],
    );
    if (rowCount)
      await appendAudit(tx, {
        actor: "payout-executor",
        action: "payout.resign",
        subject: row.withdrawal_id,
        detail: {
          network: "solana",
          droppedSignature: signature,
          lastValidBlockHeight: row.last_valid_block_height,
          blockHeight: String(height),
        },
      });
  });
  return out("queued", { reason: "blockhash_expired", txHash: null });
}

/** Moves one approved Solana payout forward as far as it can now; safe to repeat after any crash. */
export async function advanceSolanaPayout(
  db: Pool,
  t: SolanaTreasury,
  withdrawalId: string,
  opts: { waitMs?: number } = {},
): Promise<SolanaOutcome> {
  let row = await load(db, withdrawalId);
  if (!row) return { withdrawalId, status: "queued", reason: "no_payout" };
  if (row.status === "confirmed" || row.status === "failed")
    return { withdrawalId, status: row.status, txHash: row.tx_hash };
  if (row.status === "queued") {
    row = await signAndRecord(db, t, withdrawalId);
    if (row?.status !== "signed") return advanceSolanaPayout(db, t, withdrawalId, opts);
    try {
      await broadcast(db, t, row);
    } catch (err) {
      return { withdrawalId, status: "signed", txHash: row.tx_hash, reason: shortError(err) };
    }
  }
  const deadline = Date.now() + (opts.waitMs ?? 0);
  for (;;) {
    const outcome = await reconcile(db, t, row);
    if (outcome.status === "queued") return advanceSolanaPayout(db, t, withdrawalId, opts);
    if (outcome.status !== "broadcast" || Date.now() >= deadline) return outcome;
    await new Promise((r) => setTimeout(r, 250));
  }
}
