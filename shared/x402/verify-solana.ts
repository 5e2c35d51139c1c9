// Verifies a USDC payment on Solana from its signature, in code we own: the transaction is at the
// required commitment and succeeded, and the pinned recipient owner's balance of the pinned mint grew
// by at least the price (minus 2%), computed from pre/post token balances as bigint.
import { parseIntegerAmount } from "../money.ts";
import { coversPrice } from "./quote.ts";
import { type PaymentCheck, refused } from "./result.ts";

/** A JSON-RPC call: resolves to `result`, rejects on transport or JSON-RPC errors. */
export type SolanaRpcCall = (method: string, params: unknown[]) => Promise<unknown>;

/** A SolanaRpcCall over HTTP POST; works in Workers and Node. */
export function httpSolanaRpc(url: string, fetchImpl: typeof fetch = fetch): SolanaRpcCall {
  let id = 0;
  return async (method, params) => {
    const res = await fetchImpl(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params }),
    });
    if (!res.ok) throw new Error(`Solana RPC ${method}: HTTP ${res.status}`);
    const body = (await res.json()) as { result?: unknown; error?: { code: number; message: string } };
    if (body.error) throw new Error(`Solana RPC ${method}: ${body.error.code} ${body.error.message}`);
    return body.result;
  };
}

export interface VerifySolanaTransferInput {
  rpc: SolanaRpcCall;
  signature: string;
  /** The pinned USDC mint. */
  mint: string;
  /** The pinned recipient wallet (owner of the receiving token account(s)). */
  payToOwner: string;
  /** Quoted price in micro-USDC; covered if paid*100 >= price*98. */
  price: bigint;
  commitment: "confirmed" | "finalized";
  /** When set, the RPC's genesis hash must start with this (CAIP-2 reference) or the chain is wrong. */
  expectedGenesisPrefix?: string;
}

interface TokenBalance {
  accountIndex: number;
  mint: string;
  owner?: string;
  uiTokenAmount: { amount: string };
}

interface SignatureStatus {
  err: unknown;
  confirmationStatus?: "processed" | "confirmed" | "finalized" | null;
}

interface ParsedTransaction {
  slot: number;
  meta: { err: unknown; preTokenBalances?: TokenBalance[]; postTokenBalances?: TokenBalance[] } | null;
}

const SIGNATURE = /^[1-9A-HJ-NP-Za-km-z]{64,88}$/;
const RANK = { processed: 0, confirmed: 1, finalized: 2 } as const;

/** Checks one transaction signature against the pinned mint, recipient and price. */
export async function verifySolanaTransfer(input: VerifySolanaTransferInput): Promise<PaymentCheck> {
  const { rpc, signature } = input;
  if (!SIGNATURE.test(signature)) return refused("not_found", "not a base58 Solana transaction signature");
  try {
    if (input.expectedGenesisPrefix !== undefined) {
      const genesis = await rpc("getGenesisHash", []);
      if (typeof genesis !== "string" || !genesis.startsWith(input.expectedGenesisPrefix))
        return refused(
          "wrong_chain",
          `RPC serves genesis ${String(genesis)}, not ${input.expectedGenesisPrefix}...`,
        );
    }
    const statuses = (await rpc("getSignatureStatuses", [
      [signature],
      { searchTransactionHistory: true },
    ])) as {
      value: (SignatureStatus | null)[];
    };
    const status = statuses?.value?.[0] ?? null;
    if (!status) return refused("not_found", "transaction not found on Solana; if just sent, retry shortly");
    if (status.err !== null && status.err !== undefined)
      return refused("reverted", `transaction failed on-chain: ${JSON.stringify(status.err)}`);
    const reached = RANK[status.confirmationStatus ?? "processed"];
    if (reached < RANK.confirmed)
      return refused("pending", "transaction is not confirmed yet; retry with the same signature");

    const tx = (await rpc("getTransaction", [
      signature,
      { encoding: "jsonParsed", maxSupportedTransactionVersion: 0, commitment: "confirmed" },
    ])) as ParsedTransaction | null;
    if (!tx?.meta)
      return refused("pending", "transaction is not available at confirmed commitment yet; retry");
    if (tx.meta.err !== null && tx.meta.err !== undefined)
      return refused("reverted", `transaction failed on-chain: ${JSON.stringify(tx.meta.err)}`);

    // Per token account of the pinned mint: post - pre. An account created in this tx has no pre entry.
    const deltas = new Map<number, { owner: string | undefined; delta: bigint }>();
    for (const [balances, sign] of [
      [tx.meta.preTokenBalances ?? [], -1n],
      [tx.meta.postTokenBalances ?? [], 1n],
    ] as const) {
      for (const b of balances) {
        if (b.mint !== input.mint) continue;
        const entry = deltas.get(b.accountIndex) ?? { owner: b.owner, delta: 0n };
        // The owner after the tx decides whose money it is (an owner change inside the tx counts).
        if (sign === 1n && b.owner) entry.owner = b.owner;
        entry.delta += sign * parseIntegerAmount(b.uiTokenAmount.amount);
        deltas.set(b.accountIndex, entry);
      }
    }
    const moved = [...deltas.values()].filter((d) => d.delta !== 0n);
    if (moved.length === 0)
      return refused(
        "no_usdc_transfer",
        `no balance change of the pinned USDC mint ${input.mint} in this transaction`,
      );
    const paid = moved.filter((d) => d.owner === input.payToOwner).reduce((sum, d) => sum + d.delta, 0n);
    if (paid <= 0n)
      return refused("wrong_recipient", `no USDC received by the pinned recipient ${input.payToOwner}`);
    if (!coversPrice(paid, input.price))
      return refused("underpaid", `paid ${paid} micro-USDC, price is ${input.price}`, {
        paid,
        required: input.price,
      });

    if (reached < RANK[input.commitment])
      return refused(
        "insufficient_confirmations",
        `transaction is ${status.confirmationStatus}, not yet ${input.commitment}`,
      );

    // The payer is the owner whose balance of the mint fell the most.
    const payer = moved.filter((d) => d.delta < 0n).sort((x, y) => (x.delta < y.delta ? -1 : 1))[0];
    return { ok: true, code: "ok", amount: paid, from: payer?.owner ?? "", blockNumber: BigInt(tx.slot) };
  } catch (err) {
    // First line only: the detail may carry node internals we do not hand to clients.
    return refused(
      "rpc_error",
      `Solana RPC failed: ${err instanceof Error ? err.message.split("\n")[0] : "unknown error"}`,
    );
  }
}
