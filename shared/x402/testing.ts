/**
 * Test fixtures for x402 payment headers (not a test file): what a paying EVM wallet sends, signed
 * the way the x402 clients sign it.
 */
import { type Address, toHex } from "viem";
import type { PrivateKeyAccount } from "viem/accounts";
import { bindingTypedData } from "./binding.ts";
import { transferWithAuthorizationTypes } from "./eip3009.ts";
import { BASE_CHAIN_ID, BASE_USDC_EIP712, CAIP2 } from "./networks.ts";
import { encodeBase64Json } from "./quote.ts";

/**
 * Signs a TransferWithAuthorization the way @x402/evm's exact client does, and wraps it as an x402
 * v2 header accepting `price` of `resource`. The authorization pays `price` from the signer to
 * `payTo` unless `value`, `from` or `to` say otherwise (to forge refusals).
 */
export async function signedEip3009Header(
  signer: PrivateKeyAccount,
  input: {
    usdc: Address;
    payTo: Address;
    price: bigint;
    resource: string;
    value?: bigint;
    from?: Address;
    to?: Address;
    validBefore?: bigint;
    verifyingContract?: Address;
  },
): Promise<string> {
  const authorization = {
    from: input.from ?? signer.address,
    to: input.to ?? input.payTo,
    value: input.value ?? input.price,
    validAfter: 0n,
    validBefore: input.validBefore ?? BigInt(Math.floor(Date.now() / 1000) + 300),
    nonce: toHex(crypto.getRandomValues(new Uint8Array(32))),
  };
  const signature = await signer.signTypedData({
    domain: {
      ...BASE_USDC_EIP712,
      chainId: BASE_CHAIN_ID,
      verifyingContract: input.verifyingContract ?? input.usdc,
    },
    types: transferWithAuthorizationTypes,
    primaryType: "TransferWithAuthorization",
    message: authorization,
  });
  return encodeBase64Json({
    x402Version: 2,
    resource: { url: input.resource },
    accepted: {
      scheme: "exact",
      network: CAIP2.base,
      amount: input.price.toString(),
      asset: input.usdc,
      payTo: input.payTo,
      maxTimeoutSeconds: 600,
      extra: BASE_USDC_EIP712,
    },
    payload: {
      signature,
      authorization: Object.fromEntries(
        Object.entries(authorization).map(([k, v]) => [k, typeof v === "bigint" ? v.toString() : v]),
      ),
    },
  });
}

/** Our bound form on Base: the tx reference plus an EIP-712 binding to `resource` signed by `signer`. */
export async function boundPaymentHeader(
  signer: PrivateKeyAccount,
  input: { resource: string; txRef: string },
): Promise<string> {
  const message = {
    resource: input.resource,
    txRef: input.txRef,
    nonce: `n-${crypto.randomUUID().slice(0, 8)}`,
    expiry: Math.floor(Date.now() / 1000) + 300,
  };
  return encodeBase64Json({
    x402Version: 2,
    accepted: { scheme: "exact", network: CAIP2.base },
    payload: {
      txRef: input.txRef,
      binding: {
        nonce: message.nonce,
        expiry: message.expiry,
        signature: await signer.signTypedData(bindingTypedData(message)),
      },
    },
  });
}
