/**
 * The one double-entry ledger (docs/adr/0013-double-entry-ledger.md). Every movement of money is a
 * transaction of postings in integer micro-USDC, positive = debit, negative = credit, that sum to
 * zero: the database refuses to commit one that does not (a deferred constraint trigger). Balances
 * are sums of postings; nothing stores a running total.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { newId } from "../../../shared/ids.ts";

export type Book = "supplier_payable" | "supplier_earnings" | "payout_pending" | "treasury" | "sales_revenue";
export type LedgerTxnKind = "accrual" | "withdrawal" | "withdrawal_reversal" | "payout" | "sale";

export interface Posting {
  book: Book;
  accountId: string | null;
  /** positive = debit, negative = credit */
  amountMicro: bigint;
}

/**
 * Writes one ledger transaction inside the caller's database transaction; returns its id. Postings
 * of zero are dropped; a set that does not sum to zero throws here (and would fail at COMMIT anyway).
 */
export async function postTransaction(
  tx: Queryable,
  input: { kind: LedgerTxnKind; ref: string | null; postings: Posting[] },
): Promise<string | null> {
  const postings = input.postings.filter((p) => p.amountMicro !== 0n);
  if (postings.length === 0) return null;
  const sum = postings.reduce((s, p) => s + p.amountMicro, 0n);
  if (sum !== 0n) throw new RangeError(`ledger ${input.kind} does not balance: postings sum to ${sum}`);
  const id = newId("ltx", 12);
  await tx.query("INSERT INTO ledger_txns (id, kind, ref) VALUES ($1, $2, $3)", [id, input.kind, input.ref]);
  await tx.query(
    `INSERT INTO ledger_postings (txn_id, book, account_id, amount_micro)
     SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[])`,
    [
      id,
      postings.map((p) => p.book),
      postings.map((p) => p.accountId),
      postings.map((p) => String(p.amountMicro)),
    ],
  );
  return id;
}

/** Earnings accrued to suppliers: the house's expense, the suppliers' payable balance. */
export function accrualPostings(accruals: { accountId: string; amountMicro: bigint }[]): Posting[] {
  const byAccount = new Map<string, bigint>();
  for (const a of accruals) byAccount.set(a.accountId, (byAccount.get(a.accountId) ?? 0n) + a.amountMicro);
  return [...byAccount].flatMap(([accountId, amount]) => [
    { book: "supplier_earnings" as const, accountId, amountMicro: amount },
    { book: "supplier_payable" as const, accountId, amountMicro: -amount },
  ]);
}

/** The balance of one book (for one account, or all), as the book's natural sign: credit books positive. */
export async function bookBalance(db: Queryable, book: Book, accountId?: string): Promise<bigint> {
  const { rows } = await db.query<{ total: string }>(
    `SELECT coalesce(sum(amount_micro), 0)::text AS total FROM ledger_postings
      WHERE book = $1 AND ($2::text IS NULL OR account_id = $2)`,
    [book, accountId ?? null],
  );
  const debit = BigInt(rows[0]!.total);
  return book === "treasury" || book === "supplier_earnings" ? debit : -debit;
}

export interface SupplierBalance {
  /** accrued and not yet withdrawn: what a withdrawal may take */
  availableMicro: bigint;
  /** withdrawn, waiting for approval or the chain */
  pendingPayoutMicro: bigint;
  /** paid out on-chain */
  paidMicro: bigint;
}

/** What the house owes an account, by state. */
export async function supplierBalance(db: Queryable, accountId: string): Promise<SupplierBalance> {
  const { rows } = await db.query<{ available: string; pending: string; paid: string }>(
    `SELECT coalesce(-sum(p.amount_micro) FILTER (WHERE p.book = 'supplier_payable'), 0)::text AS available,
            coalesce(-sum(p.amount_micro) FILTER (WHERE p.book = 'payout_pending'), 0)::text AS pending,
            coalesce(sum(p.amount_micro) FILTER (WHERE p.book = 'payout_pending' AND t.kind = 'payout'), 0)::text AS paid
       FROM ledger_postings p JOIN ledger_txns t ON t.id = p.txn_id
      WHERE p.account_id = $1`,
    [accountId],
  );
  const r = rows[0]!;
  return {
    availableMicro: BigInt(r.available),
    pendingPayoutMicro: BigInt(r.pending),
    paidMicro: BigInt(r.paid),
  };
}

/** The ledger's own consistency: every transaction sums to zero (a list of those that do not). */
export async function unbalancedTransactions(db: Queryable): Promise<{ txnId: string; sum: string }[]> {
  const { rows } = await db.query<{ txn_id: string; total: string }>(
    `SELECT txn_id, sum(amount_micro)::text AS total FROM ledger_postings
      GROUP BY txn_id HAVING sum(amount_micro) <> 0`,
  );
  return rows.map((r) => ({ txnId: r.txn_id, sum: r.total }));
}
