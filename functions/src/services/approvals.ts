/**
 * The human gate (DESIGN.md "Upkeep"): what moves money waits in `approvals` until a human operator
 * decides. A decision is final, made once (row lock + status check), and audited in the same
 * transaction as its effects.
 */
import { type Pool, type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import { appendAudit } from "./audit.ts";
import { postTransaction } from "./ledger.ts";

export interface Approval {
  id: string;
  kind: "payout";
  subject: string;
  summary: Record<string, unknown>;
  status: "pending" | "approved" | "rejected";
  proposedBy: string;
  decidedBy: string | null;
  reason: string | null;
  createdAt: Date;
  decidedAt: Date | null;
}

type ApprovalRow = {
  id: string;
  kind: "payout";
  subject: string;
  summary: Record<string, unknown>;
  status: Approval["status"];
  proposed_by: string;
  decided_by: string | null;
  reason: string | null;
  created_at: string | Date;
  decided_at: string | Date | null;
};

const toApproval = (r: ApprovalRow): Approval => ({
  id: r.id,
  kind: r.kind,
  subject: r.subject,
  summary: r.summary,
  status: r.status,
  proposedBy: r.proposed_by,
  decidedBy: r.decided_by,
  reason: r.reason,
  createdAt: new Date(r.created_at),
  decidedAt: r.decided_at ? new Date(r.decided_at) : null,
});

const COLUMNS = "id, kind, subject, summary, status, proposed_by, decided_by, reason, created_at, decided_at";

export async function listApprovals(
  db: Queryable,
  opts: { status?: Approval["status"]; limit: number },
): Promise<Approval[]> {
  const { rows } = await db.query<ApprovalRow>(
    `SELECT ${COLUMNS} FROM approvals WHERE ($1::text IS NULL OR status = $1)
      ORDER BY created_at DESC, id LIMIT $2`,
    [opts.status ?? null, opts.limit],
  );
  return rows.map(toApproval);
}

export type Decision =
  | { ok: true; approval: Approval }
  | { ok: false; code: "not_found" | "already_decided"; message: string };

/**
 * Approves or rejects a pending approval. Approving a payout queues its on-chain transfer;
 * rejecting one returns the amount to the supplier's available balance.
 */
export async function decideApproval(
  db: Pool,
  input: { id: string; decision: "approve" | "reject"; actor: string; reason?: string; now: Date },
): Promise<Decision> {
  return withTransaction(db, async (tx): Promise<Decision> => {
    const { rows } = await tx.query<ApprovalRow>(
      `SELECT ${COLUMNS} FROM approvals WHERE id = $1 FOR UPDATE`,
      [input.id],
    );
    const row = rows[0];
    if (!row) return { ok: false, code: "not_found", message: `no approval ${input.id}` };
    if (row.status !== "pending")
      return {
        ok: false,
        code: "already_decided",
        message: `approval ${input.id} was already ${row.status}${row.decided_by ? ` by ${row.decided_by}` : ""}`,
      };
    const status = input.decision === "approve" ? "approved" : "rejected";
    const updated = await tx.query<ApprovalRow>(
      `UPDATE approvals SET status = $2, decided_by = $3, reason = $4, decided_at = $5 WHERE id = $1
       RETURNING ${COLUMNS}`,
      [input.id, status, input.actor, input.reason ?? null, input.now.toISOString()],
    );
    const { rows: w } = await tx.query<{
      account_id: string;
      amount_micro: string;
      network: string;
      address: string;
    }>("SELECT account_id, amount_micro::text, network, address FROM withdrawals WHERE id = $1 FOR UPDATE", [
      row.subject,
    ]);
    const withdrawal = w[0]!;
    if (status === "approved") {
      await tx.query("UPDATE withdrawals SET status = 'approved', updated_at = $2 WHERE id = $1", [
        row.subject,
        input.now.toISOString(),
      ]);
      await tx.query(
        "INSERT INTO payouts (withdrawal_id, network, to_address, amount_micro) VALUES ($1, $2, $3, $4)",
        [row.subject, withdrawal.network, withdrawal.address, withdrawal.amount_micro],
      );
    } else {
      await tx.query("UPDATE withdrawals SET status = 'rejected', updated_at = $2 WHERE id = $1", [
        row.subject,
        input.now.toISOString(),
      ]);
      const amount = BigInt(withdrawal.amount_micro);
      await postTransaction(tx, {
        kind: "withdrawal_reversal",
        ref: row.subject,
        postings: [
          { book: "payout_pending", accountId: withdrawal.account_id, amountMicro: amount },
          { book: "supplier_payable", accountId: withdrawal.account_id, amountMicro: -amount },
        ],
      });
    }
    await appendAudit(tx, {
      actor: input.actor,
      action: `approval.${input.decision}`,
      subject: input.id,
      detail: {
        kind: row.kind,
        withdrawalId: row.subject,
        amountMicro: withdrawal.amount_micro,
        address: withdrawal.address,
        ...(input.reason ? { reason: input.reason } : {}),
      },
    });
    return { ok: true, approval: toApproval(updated.rows[0]!) };
  });
}
