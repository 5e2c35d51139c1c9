// One result union for every on-chain payment check (Base, Solana, EIP-3009 settlement), so the
// purchase route maps codes to answers once. Expected failures are results, never throws.

export type PaymentFailureCode =
  /** Seen by the chain but not yet included (or not yet at the required commitment): retry. */
  | "pending"
  /** The chain does not know this tx (yet): retry later, nothing consumed. */
  | "not_found"
  /** Included but failed (EVM status reverted, Solana meta.err set). */
  | "reverted"
  /** The RPC endpoint serves another chain than the one we sell on. */
  | "wrong_chain"
  /** No transfer of the pinned asset (USDC contract / mint) in this tx. */
  | "no_usdc_transfer"
  /** USDC moved, but not to our pinned recipient. */
  | "wrong_recipient"
  /** Paid less than the price minus the 2% tolerance. */
  | "underpaid"
  /** Valid, but not yet buried deep enough: retry. */
  | "insufficient_confirmations"
  /** The RPC endpoint failed or answered nonsense: retry, nothing consumed. */
  | "rpc_error";

export interface PaymentVerified {
  ok: true;
  code: "ok";
  /** Sum of matching transfers to the recipient, integer micro-USDC. */
  amount: bigint;
  /** The paying wallet (EVM Transfer `from`; Solana owner whose USDC balance fell). */
  from: string;
  /** EVM block number or Solana slot. */
  blockNumber: bigint;
}

export interface PaymentRefused {
  ok: false;
  code: PaymentFailureCode;
  message: string;
  /** True when the same reference may verify later (pending, confirmations, RPC trouble). */
  retryable: boolean;
  paid?: bigint;
  required?: bigint;
  confirmations?: bigint;
}

export type PaymentCheck = PaymentVerified | PaymentRefused;

const RETRYABLE: ReadonlySet<PaymentFailureCode> = new Set([
  "pending",
  "not_found",
  "insufficient_confirmations",
  "rpc_error",
]);

export function refused(
  code: PaymentFailureCode,
  message: string,
  details: Pick<PaymentRefused, "paid" | "required" | "confirmations"> = {},
): PaymentRefused {
  return { ok: false, code, message, retryable: RETRYABLE.has(code), ...details };
}
