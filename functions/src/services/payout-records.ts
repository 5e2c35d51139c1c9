/**
 * What the Base and Solana payout executors record alike (docs/adr/0014, 0019): a transfer that
 * reached the wanted depth leaves the books once, and one that failed on chain is marked failed once
 * (its amount stays in `payout_pending` for a human to decide).
 */
import { type Pool, type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import { appendAudit } from "./audit.ts";
import { postTransaction } from "./ledger.ts";

/** A payout row as both executors load it (joined with its withdrawal's account). */
export interface RecordedPayout {
  withdrawal_id: string;
  account_id: string;
  amount_micro: string;
  tx_hash: string | null;
}

/** The first line of an error, short enough for a status row or an audit detail. */
export const shortError = (err: unknown) =>
  String((err as Error)?.message ?? err)
    .split("\n")[0]!
    .slice(0, 300);

/** Confirmed: payout_pending -> treasury and the withdrawal paid, once, with the chain's evidence audited. */
export async function recordPayoutConfirmed(
  db: Pool,
  row: RecordedPayout,
  chain: { block: bigint; confirmations: number | null; evidence: Record<string, unknown> },
): Promise<void> {
  await withTransaction(db, async (tx) => {
    const { rowCount } = await tx.query(
      `UPDATE payouts SET status = 'confirmed', block_number = $2, confirmations = COALESCE($3, confirmations),
              updated_at = now()
        WHERE withdrawal_id = $1 AND status <> 'confirmed'`,
      [row.withdrawal_id, String(chain.block), chain.confirmations],
    );
    if (!rowCount) return;
    const amount = BigInt(row.amount_micro);
    await postTransaction(tx, {
      kind: "payout",
      ref: row.withdrawal_id,
      postings: [
        { book: "payout_pending", accountId: row.account_id, amountMicro: amount },
        { book: "treasury", accountId: null, amountMicro: -amount },
      ],
    });
    await tx.query("UPDATE withdrawals SET status = 'paid', updated_at = now() WHERE id = $1", [
      row.withdrawal_id,
    ]);
    await appendAudit(tx, {
      actor: "payout-executor",
      action: "payout.confirm",
      subject: row.withdrawal_id,
      detail: { ...chain.evidence, amountMicro: row.amount_micro },
    });
  });
}

/** Failed on chain: the payout and its withdrawal marked failed, once, and audited. */
export async function recordPayoutFailed(
  db: Pool,
  row: RecordedPayout,
  reason: string,
  evidence: Record<string, unknown>,
): Promise<void> {
  await withTransaction(db, async (tx) => {
    const { rowCount } = await tx.query(
      "UPDATE payouts SET status = 'failed', last_error = $2, updated_at = now() WHERE withdrawal_id = $1 AND status <> 'failed'",
      [row.withdrawal_id, reason],
    );
    if (!rowCount) return;
    await tx.query("UPDATE withdrawals SET status = 'failed', updated_at = now() WHERE id = $1", [
      row.withdrawal_id,
    ]);
    await appendAudit(tx, {
      actor: "payout-executor",
      action: "payout.fail",
      subject: row.withdrawal_id,
      detail: { ...evidence, reason },
    });
  });
}

/**
 * Sends a recorded payout's signed bytes and marks it broadcast. An error matching `alreadySent`
 * means these very bytes reached the chain before (a re-send after a lost answer): the success we
 * wanted. Any other error is kept on the row and thrown; the payout is reconciled later.
 */
export async function broadcastRecorded(
  db: Queryable,
  withdrawalId: string,
  send: () => Promise<unknown>,
  alreadySent: RegExp,
): Promise<void> {
  try {
    await send();
  } catch (err) {
    if (!alreadySent.test(shortError(err))) {
      await db.query("UPDATE payouts SET last_error = $2, updated_at = now() WHERE withdrawal_id = $1", [
        withdrawalId,
        shortError(err),
      ]);
      throw err;
    }
  }
  await db.query(
    "UPDATE payouts SET status = 'broadcast', updated_at = now() WHERE withdrawal_id = $1 AND status = 'signed'",
    [withdrawalId],
  );
}
