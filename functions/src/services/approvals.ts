/**
 * The human gate (DESIGN.md "Upkeep"): what moves money waits in `approvals` until a human operator
 * decides. A decision is final, made once (row lock + status check), and audited in the same
 * transaction as its effects.
 */
import { type Pool, type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";
import { type Execution, executeProposal, type ProposalAction } from "./proposals.ts";
import { reverseWithdrawal } from "./withdrawals.ts";

export interface Approval {
  id: string;
  kind: "payout" | "proposal";
  subject: string;
  summary: Record<string, unknown>;
  status: "pending" | "approved" | "rejected";
  proposedBy: string;
  decidedBy: string | null;
  reason: string | null;
  createdAt: Date;
  decidedAt: Date | null;
  /** proposals: what executing it did */
  result: Record<string, unknown> | null;
}

type ApprovalRow = {
  id: string;
  kind: "payout" | "proposal";
  subject: string;
  summary: Record<string, unknown>;
  status: Approval["status"];
  proposed_by: string;
  decided_by: string | null;
  reason: string | null;
  created_at: string | Date;
  decided_at: string | Date | null;
  result: Record<string, unknown> | null;
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
  result: r.result ?? null,
});

const COLUMNS =
  "id, kind, subject, summary, status, proposed_by, decided_by, reason, created_at, decided_at, result";

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
 * rejecting one returns the amount to the supplier's available balance. Approving a proposal
 * executes it in the same transaction (ADR 0018); its Redis follow-up runs after the commit when
 * `redis` is given.
 */
export async function decideApproval(
  db: Pool,
  input: { id: string; decision: "approve" | "reject"; actor: string; reason?: string; now: Date },
  redis?: RedisClient,
): Promise<Decision> {
  let after: Execution["after"] | undefined;
  const decision = await withTransaction(db, async (tx): Promise<Decision> => {
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
    if (row.kind === "proposal") {
      const p = row.summary as unknown as ProposalAction;
      let result: Record<string, unknown> | null = null;
      if (status === "approved") {
        const ex = await executeProposal(tx, p, input.actor);
        result = ex.result;
        after = ex.after;
        await tx.query("UPDATE approvals SET result = $2 WHERE id = $1", [input.id, JSON.stringify(result)]);
      }
      await appendAudit(tx, {
        actor: input.actor,
        action: `approval.${input.decision}`,
        subject: input.id,
        detail: { kind: row.kind, action: p.action, ...(input.reason ? { reason: input.reason } : {}) },
      });
      return { ok: true, approval: { ...toApproval(updated.rows[0]!), result } };
    }
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
      await reverseWithdrawal(tx, row.subject, withdrawal.account_id, BigInt(withdrawal.amount_micro));
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
  if (after && redis) await after({ redis, db });
  return decision;
}
