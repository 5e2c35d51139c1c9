/**
 * Reads the payment proof a request carries and checks it on-chain with the shared verifiers:
 * a bare tx hash / Solana signature, our bound form (tx ref + signature by the paying wallet), or a
 * standard x402 `exact` EIP-3009 authorization that we settle ourselves and then verify like any tx.
 */
import type { Hex } from "viem";
import type { Queryable } from "../../../shared/db/pool.ts";
import {
  type BoundPayment,
  decodeBoundPaymentHeader,
  verifyPaymentBinding,
} from "../../../shared/x402/binding.ts";
import {
  authorizationKey,
  type CheckEip3009Input,
  checkEip3009Authorization,
  decodeEip3009Header,
  type Eip3009Payment,
  settleEip3009Payment,
} from "../../../shared/x402/eip3009.ts";
import {
  BASE_USDC_EIP712,
  CAIP2,
  type PaymentNetwork,
  SOLANA_MAINNET_GENESIS_PREFIX,
} from "../../../shared/x402/networks.ts";
import { decodeBase64Json } from "../../../shared/x402/quote.ts";
import type { PaymentCheck } from "../../../shared/x402/result.ts";
import { verifyBaseTransfer } from "../../../shared/x402/verify-base.ts";
import { verifySolanaTransfer } from "../../../shared/x402/verify-solana.ts";
import type { X402Rails } from "./x402-config.ts";

export type PaymentProof =
  | { kind: "bare"; network: PaymentNetwork; txRef: string }
  | { kind: "bound"; bound: BoundPayment }
  | { kind: "eip3009"; payment: Eip3009Payment; authorizationKey: string };

export type ProofParse = { ok: true; proof: PaymentProof } | { ok: false; message: string };

const EVM_TX = /^0x[0-9a-fA-F]{64}$/;
const SOLANA_SIGNATURE = /^[1-9A-HJ-NP-Za-km-z]{64,88}$/;

/**
 * The proof in `Payment-Signature` (bare ref or x402 v2 base64 JSON) or `X-PAYMENT` (x402 v1); null
 * when the request carries none (then it gets the 402).
 */
export function readPaymentProof(headers: {
  paymentSignature: string | undefined;
  xPayment: string | undefined;
}): ProofParse | null {
  const raw = (headers.paymentSignature ?? headers.xPayment)?.trim();
  if (!raw) return null;
  if (EVM_TX.test(raw))
    return { ok: true, proof: { kind: "bare", network: "base", txRef: raw.toLowerCase() } };
  // A Solana signature is base58; base64 JSON never decodes from it, so test JSON first.
  const json = decodeBase64Json(raw);
  if (json === null && SOLANA_SIGNATURE.test(raw))
    return { ok: true, proof: { kind: "bare", network: "solana", txRef: raw } };
  const bound = decodeBoundPaymentHeader(raw);
  if (bound) {
    const txRef = bound.network === "base" ? bound.txRef.toLowerCase() : bound.txRef;
    return { ok: true, proof: { kind: "bound", bound: { ...bound, txRef } } };
  }
  const eip3009 = decodeEip3009Header(raw);
  if (eip3009.ok)
    return {
      ok: true,
      proof: {
        kind: "eip3009",
        payment: eip3009.payment,
        authorizationKey: authorizationKey(eip3009.payment),
      },
    };
  if (json !== null && eip3009.code === "authorization_wrong_network")
    return { ok: false, message: eip3009.message };
  const network = (json as { accepted?: { network?: unknown } } | null)?.accepted?.network;
  if (typeof network === "string" && network !== CAIP2.base && network !== CAIP2.solana)
    return {
      ok: false,
      message: `payments are accepted on ${CAIP2.base} and ${CAIP2.solana}, not ${network}`,
    };
  return {
    ok: false,
    message:
      "Payment-Signature must be a Base tx hash (0x + 64 hex), a Solana signature (base58), or an x402 v2 payment (base64 JSON)",
  };
}

export interface VerifiedPayment {
  network: PaymentNetwork;
  txRef: string;
  payer: string;
  amount: bigint;
  /** The payer proved it sent this request (binding signature or its own EIP-3009 signature). */
  payerProven: boolean;
  authorizationKey: string | null;
}

export type PaymentVerdict =
  | { ok: true; payment: VerifiedPayment }
  | { ok: false; pending: boolean; reason: string; message: string; details?: Record<string, string> };

export function consumptionKey(p: { network: PaymentNetwork; txRef: string }): string {
  return `${p.network}:${p.txRef}`;
}

/** A final refusal: nothing to retry. */
function refused(reason: string, message: string): PaymentVerdict {
  return { ok: false, pending: false, reason, message };
}

function fromCheck(check: PaymentCheck, network: PaymentNetwork, txRef: string): PaymentVerdict {
  if (check.ok)
    return {
      ok: true,
      payment: {
        network,
        txRef,
        payer: check.from,
        amount: check.amount,
        payerProven: false,
        authorizationKey: null,
      },
    };
  const details: Record<string, string> = { txRef };
  if (check.paid !== undefined) details.paidMicroUsdc = check.paid.toString();
  if (check.required !== undefined) details.requiredMicroUsdc = check.required.toString();
  return { ok: false, pending: check.retryable, reason: check.code, message: check.message, details };
}

async function verifyTransfer(
  rails: X402Rails,
  network: PaymentNetwork,
  txRef: string,
  price: bigint,
): Promise<PaymentVerdict> {
  if (network === "base") {
    const base = rails.base;
    if (!base) return refused("wrong_network", "Base payments are not accepted here");
    const check = await verifyBaseTransfer({
      client: base.client,
      txHash: txRef,
      usdc: base.usdc,
      payTo: base.payTo,
      expectedChainId: base.chainId,
      price,
      confirmations: base.confirmations,
    });
    return fromCheck(check, network, txRef);
  }
  const solana = rails.solana;
  if (!solana) return refused("wrong_network", "Solana payments are not accepted here");
  const check = await verifySolanaTransfer({
    rpc: solana.rpc,
    signature: txRef,
    mint: solana.mint,
    payToOwner: solana.payTo,
    price,
    commitment: "confirmed",
    expectedGenesisPrefix: SOLANA_MAINNET_GENESIS_PREFIX,
  });
  return fromCheck(check, network, txRef);
}

/** Verifies a proof against the price of `resource`; settles EIP-3009 authorizations first. */
export async function verifyPaymentProof(input: {
  rails: X402Rails;
  proof: PaymentProof;
  price: bigint;
  resource: string;
  nowSeconds: number;
}): Promise<PaymentVerdict> {
  const { rails, proof, price } = input;
  if (proof.kind === "bare") return verifyTransfer(rails, proof.network, proof.txRef, price);

  if (proof.kind === "bound") {
    const { bound } = proof;
    const verdict = await verifyTransfer(rails, bound.network, bound.txRef, price);
    if (!verdict.ok) return verdict;
    const binding = await verifyPaymentBinding({
      network: bound.network,
      message: { resource: input.resource, txRef: bound.txRef, nonce: bound.nonce, expiry: bound.expiry },
      signature: bound.signature,
      payer: verdict.payment.payer,
      expectedResource: input.resource,
      expectedTxRef: bound.txRef,
      now: input.nowSeconds,
      ...(bound.network === "base" && rails.base ? { chainId: rails.base.chainId } : {}),
    });
    if (!binding.ok) return refused(binding.code, binding.message);
    return { ok: true, payment: { ...verdict.payment, payerProven: true } };
  }

  const base = rails.base;
  if (!base) return refused("wrong_network", "Base payments are not accepted here");
  if (!base.gasWallet)
    return refused(
      "settlement_unavailable",
      "EIP-3009 settlement is not configured here; transfer USDC and send the tx hash instead",
    );
  const settled = await settleEip3009Payment({
    ...authorizationTerms(base, proof.payment, price, input.nowSeconds),
    publicClient: base.client,
    walletClient: base.gasWallet,
    expectedChainId: base.chainId,
    confirmations: base.confirmations,
    receiptTimeoutMs: 20_000,
  });
  const txHash = (settled as { txHash?: Hex }).txHash;
  if (!settled.ok) {
    const details: Record<string, string> = txHash ? { txRef: txHash } : {};
    const pending = settled.retryable;
    return {
      ok: false,
      pending,
      reason: settled.code,
      message:
        txHash && pending
          ? `${settled.message} (settled as ${txHash}; retry with that hash)`
          : settled.message,
      details,
    };
  }
  return {
    ok: true,
    payment: {
      network: "base",
      txRef: (txHash ?? "").toLowerCase(),
      payer: settled.from,
      amount: settled.amount,
      // Only the holder of the `from` key could have signed the authorization.
      payerProven: true,
      authorizationKey: proof.authorizationKey,
    },
  };
}

/** What an EIP-3009 authorization must say to pay `price` into the Base rail. */
function authorizationTerms(
  base: NonNullable<X402Rails["base"]>,
  payment: Eip3009Payment,
  price: bigint,
  nowSeconds: number,
): CheckEip3009Input {
  return {
    payment,
    usdc: base.usdc,
    domain: BASE_USDC_EIP712,
    chainId: base.chainId,
    payTo: base.payTo,
    price,
    now: nowSeconds,
  };
}

/** Whether an EIP-3009 authorization already bought something here (its payment row exists). */
export async function authorizationRecorded(db: Queryable, authorizationKey: string): Promise<boolean> {
  const { rows } = await db.query("SELECT 1 FROM x402_payments WHERE authorization_key = $1", [
    authorizationKey,
  ]);
  return rows.length > 0;
}

/**
 * Like verifyPaymentProof, but an EIP-3009 authorization we already settled is recognised (its
 * token nonce is burnt, so settling again would fail) and answered from its payment row, after
 * checking its signature again: the same from+nonce alone proves nothing.
 */
export async function verifyOrRecallPayment(input: {
  db: Queryable;
  rails: X402Rails;
  proof: PaymentProof;
  price: bigint;
  resource: string;
  nowSeconds: number;
}): Promise<PaymentVerdict> {
  const { proof, rails } = input;
  if (proof.kind !== "eip3009" || !rails.base) return verifyPaymentProof(input);
  const { rows } = await input.db.query<{
    network: "base";
    tx_ref: string;
    payer: string;
    amount_micro: string;
  }>("SELECT network, tx_ref, payer, amount_micro FROM x402_payments WHERE authorization_key = $1", [
    proof.authorizationKey,
  ]);
  const row = rows[0];
  if (!row) return verifyPaymentProof(input);
  const check = await checkEip3009Authorization(
    authorizationTerms(rails.base, proof.payment, input.price, input.nowSeconds),
  );
  if (!check.ok) return refused(check.code, check.message);
  return {
    ok: true,
    payment: {
      network: row.network,
      txRef: row.tx_ref,
      payer: row.payer,
      amount: BigInt(row.amount_micro),
      payerProven: true,
      authorizationKey: proof.authorizationKey,
    },
  };
}
