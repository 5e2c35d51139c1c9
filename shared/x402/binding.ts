// Request binding: a tx hash is public the moment it is mined, so possession of it proves nothing.
// The paying wallet signs {resource, txRef, nonce, expiry} (EIP-712 on Base, ed25519 signMessage on
// Solana); we accept the signature only from the wallet the on-chain verification named as payer.
// See docs/adr/0002-x402-request-binding.md for how the bare-hash path stays usable.
import {
  getBase58Encoder,
  getPublicKeyFromAddress,
  isAddress as isSolanaAddress,
  type SignatureBytes,
  type Address as SolanaAddress,
  verifySignature,
} from "@solana/kit";
import { type Address, type Hex, isAddress, isAddressEqual, recoverTypedDataAddress } from "viem";
import { z } from "zod";
import { BASE_CHAIN_ID, CAIP2, type PaymentNetwork } from "./networks.ts";
import { decodeBase64Json } from "./quote.ts";

export interface PaymentBindingMessage {
  /** The URL being bought, as announced in the 402 (`resource`). */
  resource: string;
  /** The Base tx hash or Solana signature that paid. */
  txRef: string;
  /** Client-chosen, 8-128 chars: makes each binding unique so a server may remember used ones. */
  nonce: string;
  /** Unix seconds after which the binding is void. */
  expiry: number;
}

export const BINDING_EIP712_DOMAIN = { name: "peerproxy x402 payment binding", version: "1" } as const;

export const bindingTypes = {
  PaymentBinding: [
    { name: "resource", type: "string" },
    { name: "txRef", type: "string" },
    { name: "nonce", type: "string" },
    { name: "expiry", type: "uint256" },
  ],
} as const;

/** The EIP-712 typed data an EVM wallet signs (`signTypedData(bindingTypedData(msg))`). */
export function bindingTypedData(message: PaymentBindingMessage, chainId: number = BASE_CHAIN_ID) {
  return {
    domain: { ...BINDING_EIP712_DOMAIN, chainId },
    types: bindingTypes,
    primaryType: "PaymentBinding" as const,
    message: { ...message, expiry: BigInt(message.expiry) },
  };
}

/** The exact UTF-8 text a Solana wallet signs with signMessage. */
export function solanaBindingText(message: PaymentBindingMessage): string {
  return [
    "peerproxy x402 payment binding",
    `resource: ${message.resource}`,
    `txRef: ${message.txRef}`,
    `nonce: ${message.nonce}`,
    `expiry: ${message.expiry}`,
  ].join("\n");
}

export type BindingFailureCode =
  | "binding_malformed"
  | "binding_mismatch"
  | "binding_expired"
  | "binding_wrong_signer";

export type BindingCheck = { ok: true } | { ok: false; code: BindingFailureCode; message: string };

export interface VerifyBindingInput {
  network: PaymentNetwork;
  message: PaymentBindingMessage;
  /** EVM: 0x hex; Solana: base58 (or standard base64) of the 64-byte ed25519 signature. */
  signature: string;
  /** The payer named by on-chain verification (`PaymentVerified.from`). */
  payer: string;
  expectedResource: string;
  expectedTxRef: string;
  /** Unix seconds. */
  now: number;
  /** Refuse bindings that claim to live longer than this (default 15 minutes). */
  maxLifetimeSeconds?: number;
  chainId?: number;
}

/** Accepts the binding only if it names this resource and tx, is fresh, and the payer signed it. */
export async function verifyPaymentBinding(input: VerifyBindingInput): Promise<BindingCheck> {
  const { message } = input;
  if (!/^[\x21-\x7e]{8,128}$/.test(message.nonce) || !Number.isSafeInteger(message.expiry))
    return {
      ok: false,
      code: "binding_malformed",
      message: "binding needs an 8-128 char nonce and integer expiry",
    };
  if (
    message.resource !== input.expectedResource ||
    !sameTxRef(input.network, message.txRef, input.expectedTxRef)
  )
    return { ok: false, code: "binding_mismatch", message: "binding names another resource or transaction" };
  if (message.expiry <= input.now)
    return { ok: false, code: "binding_expired", message: "binding has expired; sign a fresh one" };
  if (message.expiry > input.now + (input.maxLifetimeSeconds ?? 900))
    return { ok: false, code: "binding_malformed", message: "binding expiry is too far in the future" };

  const signedByPayer =
    input.network === "base"
      ? await evmSignedBy(input.payer, message, input.signature, input.chainId ?? BASE_CHAIN_ID)
      : await solanaSignedBy(input.payer, message, input.signature);
  if (signedByPayer === null)
    return { ok: false, code: "binding_malformed", message: "binding signature or payer does not parse" };
  if (!signedByPayer)
    return {
      ok: false,
      code: "binding_wrong_signer",
      message: "binding is not signed by the wallet that paid",
    };
  return { ok: true };
}

function sameTxRef(network: PaymentNetwork, a: string, b: string): boolean {
  // EVM hashes are case-insensitive hex; Solana signatures are case-sensitive base58.
  return network === "base" ? a.toLowerCase() === b.toLowerCase() : a === b;
}

async function evmSignedBy(
  payer: string,
  message: PaymentBindingMessage,
  signature: string,
  chainId: number,
): Promise<boolean | null> {
  if (!isAddress(payer, { strict: false }) || !/^0x[0-9a-fA-F]{130}$/.test(signature)) return null;
  try {
    const signer = await recoverTypedDataAddress({
      ...bindingTypedData(message, chainId),
      signature: signature as Hex,
    });
    return isAddressEqual(signer, payer as Address);
  } catch {
    return null;
  }
}

async function solanaSignedBy(
  payer: string,
  message: PaymentBindingMessage,
  signature: string,
): Promise<boolean | null> {
  if (!isSolanaAddress(payer)) return null;
  const bytes = decodeSolanaSignature(signature);
  if (!bytes) return null;
  try {
    const key = await getPublicKeyFromAddress(payer as SolanaAddress);
    return await verifySignature(key, bytes, new TextEncoder().encode(solanaBindingText(message)));
  } catch {
    return null;
  }
}

function decodeSolanaSignature(text: string): SignatureBytes | null {
  try {
    // 64 bytes in base64 always end in "==", which base58 never contains.
    const bytes = text.endsWith("==")
      ? Uint8Array.from(atob(text), (c) => c.charCodeAt(0))
      : new Uint8Array(getBase58Encoder().encode(text));
    return bytes.length === 64 ? (bytes as SignatureBytes) : null;
  } catch {
    return null;
  }
}

const boundPaymentSchema = z.object({
  x402Version: z.literal(2),
  accepted: z.object({ scheme: z.string(), network: z.string() }),
  payload: z.object({
    txRef: z.string().min(1).max(128),
    binding: z.object({
      nonce: z.string(),
      expiry: z.number().int(),
      signature: z.string().min(1).max(256),
    }),
  }),
});

export interface BoundPayment {
  network: PaymentNetwork;
  txRef: string;
  nonce: string;
  expiry: number;
  signature: string;
}

/**
 * Decodes our x402 v2 PAYMENT-SIGNATURE form for a transfer the client made itself:
 * `{x402Version: 2, accepted: {scheme, network (CAIP-2)}, payload: {txRef, binding: {nonce, expiry, signature}}}`.
 * Null when the header is something else (e.g. an EIP-3009 authorization, see eip3009.ts).
 */
export function decodeBoundPaymentHeader(header: string): BoundPayment | null {
  const parsed = boundPaymentSchema.safeParse(decodeBase64Json(header));
  if (!parsed.success) return null;
  const { accepted, payload } = parsed.data;
  const network =
    accepted.network === CAIP2.base || accepted.network === "base"
      ? "base"
      : accepted.network === CAIP2.solana || accepted.network === "solana"
        ? "solana"
        : null;
  if (!network) return null;
  return { network, txRef: payload.txRef, ...payload.binding };
}
