/**
 * Withdrawals (docs/adr/0014, 0015): a supplier moves its available balance into payout_pending,
 * to the wallet registered and out of cooling at request time, and an approval is filed for a
 * human. The withdrawal, its approval, its postings and its audit row commit together or not at all.
 */
import type { Pool, Queryable } from "../../../shared/db/pool.ts";
import { withTransaction } from "../../../shared/db/pool.ts";
import { newId } from "../../../shared/ids.ts";
import { appendAudit } from "./audit.ts";
import { postTransaction, supplierBalance } from "./ledger.ts";
import { getSetting } from "./settings.ts";
import { getWallet, type PayoutNetwork } from "./wallets.ts";

/** How an account's devices connect, for the withdrawal minimum (ADR 0015). */
export type SupplyKind = "agent" | "sdk";

export const DEFAULT_MINIMUMS: Record<SupplyKind, number> = { agent: 5_000_000, sdk: 10_000_000 };

/**
 * `sdk` when any of the account's devices registered with an `sdkVersion` (our SDKs always send it)
 * or it has no devices at all (farmers, new accounts): the stricter minimum; `agent` when every
 * device is a custom integration.
 */
export async function supplyKind(db: Queryable, accountId: string): Promise<SupplyKind> {
  const { rows } = await db.query<{ devices: string; sdk: string }>(
    `SELECT count(*)::text AS devices, count(*) FILTER (WHERE sdk_version IS NOT NULL AND sdk_version <> '')::text AS sdk
       FROM devices WHERE account_id = $1`,
    [accountId],
  );
  const r = rows[0]!;
  return Number(r.devices) > 0 && Number(r.sdk) === 0 ? "agent" : "sdk";
}

export async function withdrawalMinimum(db: Queryable, kind: SupplyKind): Promise<bigint> {
  const m = await getSetting<Partial<Record<SupplyKind, number | string>>>(
    db,
    "withdrawal_minimum_micro",
    DEFAULT_MINIMUMS,
  );
  return BigInt(m[kind] ?? DEFAULT_MINIMUMS[kind]);
}

export const WITHDRAWAL_STATUSES = [
  "pending_approval",
  "approved",
  "rejected",
  "paid",
  "failed",
  "returned",
] as const;
export type WithdrawalStatus = (typeof WITHDRAWAL_STATUSES)[number];

export interface Withdrawal {
  id: string;
  accountId: string;
  amountMicro: bigint;
  network: PayoutNetwork;
  address: string;
  minimumMicro: bigint;
  status: WithdrawalStatus;
  approvalId: string | null;
  txHash: string | null;
  confirmations: number;
  createdAt: Date;
  updatedAt: Date;
}

export type WithdrawalRefusal =
  | { code: "no_wallet"; message: string }
  | { code: "cooling"; message: string; payableFrom: Date }
  | { code: "below_minimum"; message: string; minimumMicro: bigint; supplyKind: SupplyKind }
  | { code: "insufficient_balance"; message: string; availableMicro: bigint };

const usdc = (micro: bigint) => {
  const whole = micro / 1_000_000n;
  const frac = (micro % 1_000_000n).toString().padStart(6, "0").replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : `${whole}`;
};

/** Requests a withdrawal of `amountMicro`; a refusal says which rule and the figure it needs. */
export async function requestWithdrawal(
  db: Pool,
  input: { accountId: string; actor: string; amountMicro: bigint; now: Date },
): Promise<{ ok: true; withdrawal: Withdrawal } | { ok: false; refusal: WithdrawalRefusal }> {
  return withTransaction(db, async (tx) => {
    // One withdrawal per account at a time: the balance read below cannot go stale before the insert.
    await tx.query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE", [input.accountId]);
    const wallet = await getWallet(tx, input.accountId);
    if (!wallet)
      return {
        ok: false as const,
        refusal: {
          code: "no_wallet" as const,
          message: "register a payout wallet first: PUT /v1/peer/wallet",
        },
      };
    if (wallet.payableFrom > input.now)
      return {
        ok: false as const,
        refusal: {
          code: "cooling" as const,
          message: `the payout wallet ${wallet.address} is in its cooling period until ${wallet.payableFrom.toISOString()}; nothing pays to it before then`,
          payableFrom: wallet.payableFrom,
        },
      };
    const kind = await supplyKind(tx, input.accountId);
    const minimum = await withdrawalMinimum(tx, kind);
    if (input.amountMicro < minimum)
      return {
        ok: false as const,
        refusal: {
          code: "below_minimum" as const,
          message: `the minimum withdrawal is ${usdc(minimum)} USDC (${minimum} micro-USDC) for ${kind === "sdk" ? "accounts with SDK devices" : "custom agent integrations"}`,
          minimumMicro: minimum,
          supplyKind: kind,
        },
      };
    const { availableMicro } = await supplierBalance(tx, input.accountId);
    if (input.amountMicro > availableMicro)
      return {
        ok: false as const,
        refusal: {
          code: "insufficient_balance" as const,
          message: `amountMicro ${input.amountMicro} exceeds the available balance of ${availableMicro} micro-USDC`,
          availableMicro,
        },
      };
    const id = newId("wd", 12);
    const approvalId = newId("apr", 12);
    await tx.query(
      `INSERT INTO withdrawals (id, account_id, amount_micro, network, address, minimum_micro, status, requested_by, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, 'pending_approval', $7, $8, $8)`,
      [
        id,
        input.accountId,
        String(input.amountMicro),
        wallet.network,
        wallet.address,
        String(minimum),
        input.actor,
        input.now.toISOString(),
      ],
    );
    await tx.query(
      `INSERT INTO approvals (id, kind, subject, summary, proposed_by) VALUES ($1, 'payout', $2, $3, $4)`,
      [
        approvalId,
        id,
        JSON.stringify({
          accountId: input.accountId,
          amountMicro: String(input.amountMicro),
          network: wallet.network,
          address: wallet.address,
        }),
        input.actor,
      ],
    );
    await postTransaction(tx, {
      kind: "withdrawal",
      ref: id,
      postings: [
        { book: "supplier_payable", accountId: input.accountId, amountMicro: input.amountMicro },
        { book: "payout_pending", accountId: input.accountId, amountMicro: -input.amountMicro },
      ],
    });
    await appendAudit(tx, {
      actor: input.actor,
      action: "withdrawal.request",
      subject: id,
      detail: {
        accountId: input.accountId,
        amountMicro: String(input.amountMicro),
        network: wallet.network,
        address: wallet.address,
        approvalId,
      },
    });
    const withdrawal = (await listWithdrawals(tx, input.accountId, { id }))[0]!;
    return { ok: true as const, withdrawal };
  });
}

/** An account's withdrawals, newest first, with their approval and payout state. */
export async function listWithdrawals(
  db: Queryable,
  accountId: string,
  opts: { id?: string; limit?: number } = {},
): Promise<Withdrawal[]> {
  const { rows } = await db.query<{
    id: string;
    account_id: string;
    amount_micro: string;
    network: PayoutNetwork;
    address: string;
    minimum_micro: string;
    status: WithdrawalStatus;
    approval_id: string | null;
    tx_hash: string | null;
    confirmations: number | null;
    created_at: string | Date;
    updated_at: string | Date;
  }>(
    `SELECT w.id, w.account_id, w.amount_micro::text, w.network, w.address, w.minimum_micro::text, w.status,
            a.id AS approval_id, p.tx_hash, p.confirmations, w.created_at, w.updated_at
       FROM withdrawals w
       LEFT JOIN approvals a ON a.kind = 'payout' AND a.subject = w.id
       LEFT JOIN payouts p ON p.withdrawal_id = w.id
      WHERE w.account_id = $1 AND ($2::text IS NULL OR w.id = $2)
      ORDER BY w.created_at DESC, w.id
      LIMIT $3`,
    [accountId, opts.id ?? null, opts.limit ?? 100],
  );
  return rows.map((r) => ({
    id: r.id,
    accountId: r.account_id,
    amountMicro: BigInt(r.amount_micro),
    network: r.network,
    address: r.address,
    minimumMicro: BigInt(r.minimum_micro),
    status: r.status,
    approvalId: r.approval_id,
    txHash: r.tx_hash,
    confirmations: r.confirmations ?? 0,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  }));
}

/** A withdrawn amount back from payout_pending to the supplier's available balance (a reject, a return). */
export function reverseWithdrawal(
  tx: Queryable,
  withdrawalId: string,
  accountId: string,
  amountMicro: bigint,
) {
  return postTransaction(tx, {
    kind: "withdrawal_reversal",
    ref: withdrawalId,
    postings: [
      { book: "payout_pending", accountId, amountMicro },
      { book: "supplier_payable", accountId, amountMicro: -amountMicro },
    ],
  });
}

export type ReturnRefusal = { code: "not_found" | "not_failed"; message: string };

/**
 * A human's decision on a payout that failed on chain (docs/adr/0014): its amount leaves
 * payout_pending for the supplier's available balance, the withdrawal becomes `returned`, and the
 * move is audited with the payout's evidence, all once: the row lock makes a second or concurrent
 * call find `returned` and refuse. A payout that did not fail (queued, in flight, confirmed) is
 * refused, since its USDC may still land.
 */
export async function returnFailedWithdrawal(
  db: Pool,
  input: { id: string; actor: string; reason: string; now: Date },
): Promise<{ ok: true; withdrawal: Withdrawal } | ({ ok: false } & ReturnRefusal)> {
  const done = await withTransaction(db, async (tx): Promise<ReturnRefusal | { accountId: string }> => {
    const { rows } = await tx.query<{
      account_id: string;
      amount_micro: string;
      status: WithdrawalStatus;
      payout_status: string | null;
      tx_hash: string | null;
      last_error: string | null;
    }>(
      `SELECT w.account_id, w.amount_micro::text, w.status, p.status AS payout_status, p.tx_hash, p.last_error
         FROM withdrawals w LEFT JOIN payouts p ON p.withdrawal_id = w.id
        WHERE w.id = $1 FOR UPDATE OF w`,
      [input.id],
    );
    const w = rows[0];
    if (!w) return { code: "not_found", message: `no withdrawal ${input.id}` };
    if (w.status !== "failed" || w.payout_status !== "failed")
      return {
        code: "not_failed",
        message: `withdrawal ${input.id} is ${w.status}${w.payout_status ? ` (payout ${w.payout_status})` : ""}; only a withdrawal whose payout failed on chain can be returned`,
      };
    await tx.query("UPDATE withdrawals SET status = 'returned', updated_at = $2 WHERE id = $1", [
      input.id,
      input.now.toISOString(),
    ]);
    await reverseWithdrawal(tx, input.id, w.account_id, BigInt(w.amount_micro));
    await appendAudit(tx, {
      actor: input.actor,
      action: "withdrawal.return",
      subject: input.id,
      detail: {
        accountId: w.account_id,
        amountMicro: w.amount_micro,
        reason: input.reason,
        txHash: w.tx_hash,
        payoutError: w.last_error,
      },
    });
    return { accountId: w.account_id };
  });
  if ("code" in done) return { ok: false, ...done };
  const [withdrawal] = await listWithdrawals(db, done.accountId, { id: input.id });
  return { ok: true, withdrawal: withdrawal! };
}

/** A withdrawal whose payout failed on chain and waits for a human (the /admin page lists them). */
export interface FailedPayout {
  id: string;
  accountId: string;
  amountMicro: bigint;
  network: PayoutNetwork;
  address: string;
  txHash: string | null;
  error: string | null;
  failedAt: Date;
}

export async function listFailedPayouts(db: Queryable, limit = 100): Promise<FailedPayout[]> {
  const { rows } = await db.query<{
    id: string;
    account_id: string;
    amount_micro: string;
    network: PayoutNetwork;
    address: string;
    tx_hash: string | null;
    last_error: string | null;
    updated_at: string | Date;
  }>(
    `SELECT w.id, w.account_id, w.amount_micro::text, w.network, w.address, p.tx_hash, p.last_error, p.updated_at
       FROM withdrawals w JOIN payouts p ON p.withdrawal_id = w.id
      WHERE w.status = 'failed' AND p.status = 'failed'
      ORDER BY p.updated_at DESC, w.id
      LIMIT $1`,
    [limit],
  );
  return rows.map((r) => ({
    id: r.id,
    accountId: r.account_id,
    amountMicro: BigInt(r.amount_micro),
    network: r.network,
    address: r.address,
    txHash: r.tx_hash,
    error: r.last_error,
    failedAt: new Date(r.updated_at),
  }));
}
