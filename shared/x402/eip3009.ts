// The standard x402 `exact` scheme on EVM: the client signs an EIP-3009 TransferWithAuthorization
// for USDC; we check it locally, submit it from our own gas wallet (no facilitator), then verify the
// resulting transfer on-chain with verifyBaseTransfer exactly like a tx hash the client sent itself.
import {
  type Account,
  type Address,
  type Chain,
  type Hex,
  isAddress,
  isAddressEqual,
  type PublicClient,
  parseAbi,
  parseAbiItem,
  parseSignature,
  recoverTypedDataAddress,
  type Transport,
  type WalletClient,
} from "viem";
import { z } from "zod";
import { BASE_CHAIN_ID, CAIP2 } from "./networks.ts";
import { coversPrice, decodeBase64Json } from "./quote.ts";
import type { PaymentCheck, PaymentFailureCode } from "./result.ts";
import { shortError, verifyBaseTransfer } from "./verify-base.ts";

export const authorizationUsedEvent = parseAbiItem(
  "event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)",
);

export const eip3009Abi = parseAbi([
  "function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)",
  "function authorizationState(address authorizer, bytes32 nonce) view returns (bool)",
]);

export const transferWithAuthorizationTypes = {
  TransferWithAuthorization: [
    { name: "from", type: "address" },
    { name: "to", type: "address" },
    { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" },
  ],
} as const;

const uintText = z.string().regex(/^(0|[1-9]\d{0,77})$/);
const address = z.string().refine((v) => isAddress(v, { strict: false }), "not an address");

const authorizationSchema = z.object({
  from: address,
  to: address,
  value: uintText,
  validAfter: uintText,
  validBefore: uintText,
  nonce: z.string().regex(/^0x[0-9a-fA-F]{64}$/),
});

// Only plain 65-byte EOA signatures: smart-wallet (ERC-1271/6492) signatures are longer and refused.
const exactEvmPayloadSchema = z.object({
  signature: z.string().regex(/^0x[0-9a-fA-F]{130}$/),
  authorization: authorizationSchema,
});

// x402 v1 (X-PAYMENT) and v2 (PAYMENT-SIGNATURE) envelopes around the same `exact` EVM payload.
const envelopeSchema = z.union([
  z.object({
    x402Version: z.literal(1),
    scheme: z.literal("exact"),
    network: z.string(),
    payload: exactEvmPayloadSchema,
  }),
  z.object({
    x402Version: z.literal(2),
    accepted: z.object({
      scheme: z.literal("exact"),
      network: z.string(),
      asset: z.string(),
      payTo: z.string(),
    }),
    payload: exactEvmPayloadSchema,
  }),
]);

export interface Eip3009Authorization {
  from: Address;
  to: Address;
  value: bigint;
  validAfter: bigint;
  validBefore: bigint;
  nonce: Hex;
}

export interface Eip3009Payment {
  x402Version: 1 | 2;
  authorization: Eip3009Authorization;
  signature: Hex;
}

export type Eip3009FailureCode =
  | PaymentFailureCode
  | "authorization_malformed"
  | "authorization_wrong_network"
  | "authorization_not_yet_valid"
  | "authorization_expired"
  | "authorization_bad_signature"
  | "authorization_used"
  | "settlement_failed";

export type Eip3009Refusal = { ok: false; code: Eip3009FailureCode; message: string; retryable: boolean };

/** Decodes an X-PAYMENT (v1) or PAYMENT-SIGNATURE (v2) header carrying an `exact` EVM payment on Base. */
export function decodeEip3009Header(header: string): { ok: true; payment: Eip3009Payment } | Eip3009Refusal {
  const json = decodeBase64Json(header);
  const parsed = envelopeSchema.safeParse(json);
  if (!parsed.success)
    return fail("authorization_malformed", "payment header is not an x402 exact EVM payload (base64 JSON)");
  const envelope = parsed.data;
  const network = envelope.x402Version === 1 ? envelope.network : envelope.accepted.network;
  if (network !== "base" && network !== CAIP2.base)
    return fail(
      "authorization_wrong_network",
      `payments are accepted on base (${CAIP2.base}), not ${network}`,
    );
  const a = envelope.payload.authorization;
  return {
    ok: true,
    payment: {
      x402Version: envelope.x402Version,
      signature: envelope.payload.signature as Hex,
      authorization: {
        from: a.from as Address,
        to: a.to as Address,
        value: BigInt(a.value),
        validAfter: BigInt(a.validAfter),
        validBefore: BigInt(a.validBefore),
        nonce: a.nonce as Hex,
      },
    },
  };
}

/**
 * A key that names one authorization forever (the token burns its nonce on use): lets a route find
 * the credential an earlier settlement of the same header already minted, instead of refusing a retry.
 */
export function authorizationKey(payment: Eip3009Payment): string {
  return `base:eip3009:${payment.authorization.from.toLowerCase()}:${payment.authorization.nonce.toLowerCase()}`;
}

export interface CheckEip3009Input {
  payment: Eip3009Payment;
  usdc: Address;
  /** EIP-712 domain of the token ({name: "USD Coin", version: "2"} for USDC on Base). */
  domain: { name: string; version: string };
  chainId?: number;
  payTo: Address;
  price: bigint;
  /** Unix seconds. */
  now: number;
}

// The authorization must stay valid long enough for our settlement tx to land.
const SETTLE_MARGIN_SECONDS = 6n;

/** Validates an authorization off-chain (recipient, amount, validity window, signer) before paying gas. */
export async function checkEip3009Authorization(
  input: CheckEip3009Input,
): Promise<{ ok: true } | Eip3009Refusal> {
  const { authorization: a, signature } = input.payment;
  if (!isAddressEqual(a.to, input.payTo))
    return fail("wrong_recipient", `authorization pays ${a.to}, not the pinned recipient ${input.payTo}`);
  if (!coversPrice(a.value, input.price))
    return fail("underpaid", `authorization is for ${a.value} micro-USDC, price is ${input.price}`);
  const now = BigInt(input.now);
  if (a.validAfter >= now) return fail("authorization_not_yet_valid", "authorization is not valid yet");
  if (a.validBefore <= now + SETTLE_MARGIN_SECONDS)
    return fail("authorization_expired", "authorization has expired");
  let signer: Address;
  try {
    signer = await recoverTypedDataAddress({
      domain: {
        name: input.domain.name,
        version: input.domain.version,
        chainId: input.chainId ?? BASE_CHAIN_ID,
        verifyingContract: input.usdc,
      },
      types: transferWithAuthorizationTypes,
      primaryType: "TransferWithAuthorization",
      message: a,
      signature,
    });
  } catch {
    return fail("authorization_bad_signature", "authorization signature does not parse");
  }
  if (!isAddressEqual(signer, a.from))
    return fail("authorization_bad_signature", "authorization is not signed by its `from` wallet");
  return { ok: true };
}

/** The token's `transferWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r, s)` arguments. */
export function transferWithAuthorizationArgs(payment: Eip3009Payment) {
  const a = payment.authorization;
  const { r, s, v, yParity } = parseSignature(payment.signature);
  return [
    a.from,
    a.to,
    a.value,
    a.validAfter,
    a.validBefore,
    a.nonce,
    Number(v ?? BigInt(yParity + 27)),
    r,
    s,
  ] as const;
}

export interface SettleEip3009Input extends CheckEip3009Input {
  publicClient: PublicClient<Transport, Chain | undefined>;
  /** The server's gas wallet; it only pays gas, the USDC moves from the signer to payTo. */
  walletClient: WalletClient<Transport, Chain, Account>;
  expectedChainId: number;
  confirmations: number;
  receiptTimeoutMs?: number;
}

export type SettlementResult =
  | (PaymentCheck & { txHash?: Hex; alreadySettled?: boolean })
  | (Eip3009Refusal & { txHash?: Hex });

// How far back to look for an earlier settlement of the same authorization: ~2.8 h of Base blocks,
// far beyond the 402's maxTimeoutSeconds, and within common eth_getLogs range limits.
const SETTLED_LOOKBACK_BLOCKS = 5_000n;

/**
 * Checks, simulates and submits the authorization from our gas wallet, then verifies the mined
 * transfer on-chain. Not for the API: it claims nothing durably and serializes only within one
 * isolate (the API settles through functions/src/services/x402-settlement.ts, docs/adr/0008). Idempotent: an authorization that is already settled (a retried header, a lost
 * response, a concurrent duplicate) resolves to the transaction that settled it, `alreadySettled`.
 */
export async function settleEip3009Payment(input: SettleEip3009Input): Promise<SettlementResult> {
  const checked = await checkEip3009Authorization(input);
  if (!checked.ok) return checked;
  const { publicClient, walletClient } = input;
  let txHash: Hex;
  try {
    if (await isAuthorizationUsed(input)) return await verifyEarlierSettlement(input);
    const args = transferWithAuthorizationArgs(input.payment);
    // One submission at a time per gas wallet in this isolate: the node hands out the pending nonce,
    // and two sends racing for it would collide. Simulating inside the lock also means a duplicate
    // of an authorization that just landed fails simulation instead of paying gas to revert.
    const submitted = await serialized<{ refused: string } | { txHash: Hex }>(
      walletClient.account.address,
      async () => {
        try {
          await publicClient.simulateContract({
            address: input.usdc,
            abi: eip3009Abi,
            functionName: "transferWithAuthorization",
            args,
            account: walletClient.account,
          });
        } catch (err) {
          return { refused: `token refused the authorization: ${shortError(err)}` };
        }
        return {
          txHash: await walletClient.writeContract({
            address: input.usdc,
            abi: eip3009Abi,
            functionName: "transferWithAuthorization",
            args,
          }),
        };
      },
    );
    if ("refused" in submitted) {
      if (await isAuthorizationUsed(input)) return await verifyEarlierSettlement(input);
      return fail("settlement_failed", submitted.refused);
    }
    txHash = submitted.txHash;
  } catch (err) {
    return fail("rpc_error", `could not submit the authorization: ${shortError(err)}`);
  }
  try {
    await publicClient.waitForTransactionReceipt({
      hash: txHash,
      confirmations: input.confirmations,
      timeout: input.receiptTimeoutMs ?? 60_000,
    });
  } catch {
    // Not fatal: verification below says pending / insufficient_confirmations and the caller can
    // retry with the returned txHash as a plain Payment-Signature.
  }
  const verified = await verifyOnChain(input, txHash);
  // Lost a race with a concurrent settlement of the same authorization: answer with the winner.
  if (!verified.ok && verified.code === "reverted" && (await isAuthorizationUsed(input).catch(() => false)))
    return await verifyEarlierSettlement(input);
  return { ...verified, txHash };
}

const submissionQueues = new Map<string, Promise<unknown>>();

function serialized<T>(wallet: string, task: () => Promise<T>): Promise<T> {
  const previous = submissionQueues.get(wallet) ?? Promise.resolve();
  const next = previous.then(task, task);
  const settled = next.catch(() => undefined);
  submissionQueues.set(wallet, settled);
  void settled.then(() => {
    if (submissionQueues.get(wallet) === settled) submissionQueues.delete(wallet);
  });
  return next;
}

function isAuthorizationUsed(input: SettleEip3009Input): Promise<boolean> {
  const { from, nonce } = input.payment.authorization;
  return input.publicClient.readContract({
    address: input.usdc,
    abi: eip3009Abi,
    functionName: "authorizationState",
    args: [from, nonce],
  });
}

async function verifyEarlierSettlement(input: SettleEip3009Input): Promise<SettlementResult> {
  const { from, nonce } = input.payment.authorization;
  const head = await input.publicClient.getBlockNumber({ cacheTime: 0 });
  const logs = await input.publicClient.getLogs({
    address: input.usdc,
    event: authorizationUsedEvent,
    args: { authorizer: from, nonce },
    fromBlock: head > SETTLED_LOOKBACK_BLOCKS ? head - SETTLED_LOOKBACK_BLOCKS : 0n,
    toBlock: head,
  });
  const txHash = logs[0]?.transactionHash;
  if (!txHash) return fail("authorization_used", "this authorization was settled long ago or cancelled");
  const verified = await verifyOnChain(input, txHash);
  return verified.ok ? { ...verified, txHash, alreadySettled: true } : { ...verified, txHash };
}

function verifyOnChain(input: SettleEip3009Input, txHash: Hex): Promise<PaymentCheck> {
  return verifyBaseTransfer({
    client: input.publicClient,
    txHash,
    usdc: input.usdc,
    payTo: input.payTo,
    expectedChainId: input.expectedChainId,
    price: input.price,
    confirmations: input.confirmations,
  });
}

function fail(code: Eip3009FailureCode, message: string): Eip3009Refusal {
  return { ok: false, code, message, retryable: code === "rpc_error" };
}
