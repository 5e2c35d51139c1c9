// What the payout tests (Base on anvil, Solana on litesvm, farmers, the supplier circle) set up alike:
// a supplier with earnings and a wallet already out of cooling, an approved withdrawal waiting for
// the executor, and JSON calls to the API with an API key.
import { decideApproval } from "../../functions/src/services/approvals.ts";
import { postTransaction } from "../../functions/src/services/ledger.ts";
import { setWallet } from "../../functions/src/services/wallets.ts";
import { requestWithdrawal } from "../../functions/src/services/withdrawals.ts";
import { createAccountWithKey } from "../../shared/accounts.ts";
import { type Pool, withTransaction } from "../../shared/db/pool.ts";

/** A supplier with `earnedMicro` payable and `wallet` on `network`, its cooling period already over. */
export async function payableSupplier<W extends string>(
  db: Pool,
  opts: { earnedMicro: bigint; network: "base" | "solana"; wallet: W; namePrefix: string },
) {
  const s = await createAccountWithKey(db, {
    name: `${opts.namePrefix}-${crypto.randomUUID().slice(0, 8)}`,
    kind: "supplier",
  });
  await withTransaction(db, (tx) =>
    postTransaction(tx, {
      kind: "accrual",
      ref: "test",
      postings: [
        { book: "supplier_earnings", accountId: s.accountId, amountMicro: opts.earnedMicro },
        { book: "supplier_payable", accountId: s.accountId, amountMicro: -opts.earnedMicro },
      ],
    }),
  );
  await withTransaction(db, (tx) =>
    setWallet(tx, {
      accountId: s.accountId,
      actor: s.apiKeyId,
      network: opts.network,
      address: opts.wallet,
      now: new Date(),
    }),
  );
  await db.query("UPDATE payout_wallets SET payable_from = now() WHERE account_id = $1", [s.accountId]);
  return { ...s, wallet: opts.wallet };
}

/** Withdraws `amountMicro` for the supplier and approves it: the payout is queued, not yet run. */
export async function approvedWithdrawal(
  db: Pool,
  s: { accountId: string; apiKeyId: string },
  amountMicro: bigint,
): Promise<string> {
  const wd = await requestWithdrawal(db, {
    accountId: s.accountId,
    actor: s.apiKeyId,
    amountMicro,
    now: new Date(),
  });
  if (!wd.ok) throw new Error(wd.refusal.message);
  await decideApproval(db, {
    id: wd.withdrawal.approvalId!,
    decision: "approve",
    actor: "test",
    now: new Date(),
  });
  return wd.withdrawal.id;
}

/** `call(method, path, apiKey, body?)` against the API: the status and the parsed JSON body. */
export function apiCaller(apiUrl: () => string) {
  return async (method: string, path: string, apiKey: string, body?: unknown) => {
    const res = await fetch(`${apiUrl()}${path}`, {
      method,
      headers: { "X-API-Key": apiKey, ...(body ? { "content-type": "application/json" } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    // biome-ignore lint/suspicious/noExplicitAny: test assertions walk response JSON
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
}
