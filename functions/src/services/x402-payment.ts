/**
 * Reads the payment proof a request carries and checks transaction proofs on-chain with the shared
 * verifiers: a bare tx hash / Solana signature, or our bound form (tx ref + signature by the paying
 * wallet). A standard x402 `exact` EIP-3009 authorization is parsed here and settled by
 * x402-settlement.ts.
 */
import {
  type BoundPayment,
  decodeBoundPaymentHeader,
  verifyPaymentBinding,
} from "../../../shared/x402/binding.ts";
import { authorizationKey, decodeEip3009Header, type Eip3009Payment } from "../../../shared/x402/eip3009.ts";
import { CAIP2, type PaymentNetwork, SOLANA_MAINNET_GENESIS_PREFIX } from "../../../shared/x402/networks.ts";
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
  /**
   * The payer proved it sent this request (a fresh binding signature). Never true for an EIP-3009
   * header: that is public once our settlement is broadcast (docs/adr/0008).
   */
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

/**
 * Verifies a transaction proof (bare or bound) against the price of `resource`. EIP-3009
 * authorizations are settled by x402-settlement.ts, which claims them first.
 */
export async function verifyPaymentProof(input: {
  rails: X402Rails;
  proof: Exclude<PaymentProof, { kind: "eip3009" }>;
  price: bigint;
  resource: string;
  nowSeconds: number;
}): Promise<PaymentVerdict> {
  const { rails, proof, price } = input;
  if (proof.kind === "bare") return verifyTransfer(rails, proof.network, proof.txRef, price);

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
