import {
  createSignableMessage,
  generateKeyPairSigner,
  getBase58Decoder,
  type KeyPairSigner,
} from "@solana/kit";
import type { PrivateKeyAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { devUsdcAbi, type EvmChain, startEvmChain } from "../../dev/chains/evm.ts";
import { sendSplTransfer } from "../../test/chains/solana-client.ts";
import { type SolanaTestRpc, startSolanaTestRpc } from "../../test/chains/solana-rpc.ts";
import {
  bindingTypedData,
  decodeBoundPaymentHeader,
  type PaymentBindingMessage,
  solanaBindingText,
  verifyPaymentBinding,
} from "./binding.ts";
import { BASE_CHAIN_ID, BASE_USDC_ADDRESS, CAIP2 } from "./networks.ts";
import { encodeBase64Json } from "./quote.ts";
import { verifyBaseTransfer } from "./verify-base.ts";
import { httpSolanaRpc, verifySolanaTransfer } from "./verify-solana.ts";

const PRICE = 400_000n;
const RESOURCE = "http://127.0.0.1:8787/v1/x402/pool?tier=mbl&country=us&traffic=0.1";

let evm: EvmChain;
let solana: SolanaTestRpc;

beforeAll(async () => {
  [evm, solana] = await Promise.all([startEvmChain(), startSolanaTestRpc()]);
});
afterAll(async () => {
  await Promise.all([evm?.stop(), solana?.close()]);
});

const now = () => Math.floor(Date.now() / 1000);
const nonce = () => crypto.randomUUID();

/** Pays on anvil and returns the tx hash and the payer the verifier names. */
async function paidOnBase(agent: PrivateKeyAccount): Promise<{ txHash: string; payer: string }> {
  const txHash = await evm.walletFor(agent).writeContract({
    address: evm.usdc,
    abi: devUsdcAbi,
    functionName: "transfer",
    args: [evm.payTo.address, PRICE],
  });
  await evm.publicClient.waitForTransactionReceipt({ hash: txHash });
  const verified = await verifyBaseTransfer({
    client: evm.publicClient,
    txHash,
    usdc: BASE_USDC_ADDRESS,
    payTo: evm.payTo.address,
    expectedChainId: BASE_CHAIN_ID,
    price: PRICE,
    confirmations: 1,
  });
  if (!verified.ok) throw new Error(verified.message);
  return { txHash, payer: verified.from };
}

async function solanaSign(signer: KeyPairSigner, message: PaymentBindingMessage): Promise<string> {
  const [signatures] = await signer.signMessages([createSignableMessage(solanaBindingText(message))]);
  return getBase58Decoder().decode(signatures![signer.address]!);
}

describe("request binding: only the paying wallet can claim a payment by its tx reference", () => {
  it("an EIP-712 binding signed by the Base payer is accepted; one signed by another key is refused", async () => {
    const agent = await evm.newFundedAccount(10_000_000n);
    const { txHash, payer } = await paidOnBase(agent);
    const message = { resource: RESOURCE, txRef: txHash, nonce: nonce(), expiry: now() + 300 };
    const check = (signature: string) =>
      verifyPaymentBinding({
        network: "base",
        message,
        signature,
        payer,
        expectedResource: RESOURCE,
        expectedTxRef: txHash.toUpperCase().replace("0X", "0x"),
        now: now(),
      });
    expect(await check(await agent.signTypedData(bindingTypedData(message)))).toEqual({ ok: true });
    const observer = await evm.newFundedAccount();
    expect(await check(await observer.signTypedData(bindingTypedData(message)))).toMatchObject({
      ok: false,
      code: "binding_wrong_signer",
    });
  });

  it("a Base binding for another resource or tx, expired, or living too long is refused with its own code", async () => {
    const agent = await evm.newFundedAccount(10_000_000n);
    const { txHash, payer } = await paidOnBase(agent);
    const base = { resource: RESOURCE, txRef: txHash, nonce: nonce(), expiry: now() + 300 };
    const check = async (message: PaymentBindingMessage) =>
      verifyPaymentBinding({
        network: "base",
        message,
        signature: await agent.signTypedData(bindingTypedData(message)),
        payer,
        expectedResource: RESOURCE,
        expectedTxRef: txHash,
        now: now(),
      });
    expect(await check({ ...base, resource: `${RESOURCE}&duration=90` })).toMatchObject({
      code: "binding_mismatch",
    });
    expect(await check({ ...base, txRef: `0x${"cd".repeat(32)}` })).toMatchObject({
      code: "binding_mismatch",
    });
    expect(await check({ ...base, expiry: now() - 1 })).toMatchObject({ code: "binding_expired" });
    expect(await check({ ...base, expiry: now() + 86_400 })).toMatchObject({ code: "binding_malformed" });
    expect(await check({ ...base, nonce: "short" })).toMatchObject({ code: "binding_malformed" });
  });

  it("an ed25519 signMessage binding by the Solana payer is accepted; another key's is refused", async () => {
    const agent = await generateKeyPairSigner();
    const payTo = await generateKeyPairSigner();
    solana.airdrop(agent.address, 1_000_000_000n);
    const source = await solana.setTokenBalance(agent.address, solana.usdcMint, 10_000_000n);
    const destination = await solana.setTokenBalance(payTo.address, solana.usdcMint, 0n);
    const signature = await sendSplTransfer({
      rpcUrl: solana.url,
      payer: agent,
      mint: solana.usdcMint,
      source,
      destination,
      amount: PRICE,
    });
    const verified = await verifySolanaTransfer({
      rpc: httpSolanaRpc(solana.url),
      signature,
      mint: solana.usdcMint,
      payToOwner: payTo.address,
      price: PRICE,
      commitment: "confirmed",
    });
    if (!verified.ok) throw new Error(verified.message);
    const message = { resource: RESOURCE, txRef: signature, nonce: nonce(), expiry: now() + 300 };
    const check = (bindingSignature: string) =>
      verifyPaymentBinding({
        network: "solana",
        message,
        signature: bindingSignature,
        payer: verified.from,
        expectedResource: RESOURCE,
        expectedTxRef: signature,
        now: now(),
      });
    expect(await check(await solanaSign(agent, message))).toEqual({ ok: true });
    const observer = await generateKeyPairSigner();
    expect(await check(await solanaSign(observer, message))).toMatchObject({
      ok: false,
      code: "binding_wrong_signer",
    });
    expect(await check("not-a-signature")).toMatchObject({ ok: false, code: "binding_malformed" });
  });

  it("the x402 v2 PAYMENT-SIGNATURE form with txRef and binding decodes; other headers do not", () => {
    const header = encodeBase64Json({
      x402Version: 2,
      accepted: { scheme: "exact", network: CAIP2.solana },
      payload: {
        txRef: "5".repeat(88),
        binding: { nonce: "n-12345678", expiry: 1_900_000_000, signature: "sig" },
      },
    });
    expect(decodeBoundPaymentHeader(header)).toEqual({
      network: "solana",
      txRef: "5".repeat(88),
      nonce: "n-12345678",
      expiry: 1_900_000_000,
      signature: "sig",
    });
    expect(decodeBoundPaymentHeader(encodeBase64Json({ x402Version: 2, payload: {} }))).toBeNull();
    expect(decodeBoundPaymentHeader("%%%")).toBeNull();
  });
});
