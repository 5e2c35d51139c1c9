import { type Address, generateKeyPairSigner, type KeyPairSigner } from "@solana/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendSplTransfer } from "../../test/chains/solana-client.ts";
import { type SolanaTestRpc, startSolanaTestRpc } from "../../test/chains/solana-rpc.ts";
import { SOLANA_MAINNET_GENESIS_PREFIX } from "./networks.ts";
import { httpSolanaRpc, verifySolanaTransfer } from "./verify-solana.ts";

const PRICE = 400_000n; // 0.1 GB at $4/GB

let chain: SolanaTestRpc;

beforeAll(async () => {
  chain = await startSolanaTestRpc();
});
afterAll(async () => {
  await chain?.close();
});

interface Tenant {
  agent: KeyPairSigner;
  agentUsdc: Address;
  payTo: KeyPairSigner;
  payToUsdc: Address;
}

/** A fresh agent (SOL for fees, 10 USDC) and a fresh recipient with an empty USDC account. */
async function tenant(): Promise<Tenant> {
  const agent = await generateKeyPairSigner();
  const payTo = await generateKeyPairSigner();
  chain.airdrop(agent.address, 1_000_000_000n);
  const agentUsdc = await chain.setTokenBalance(agent.address, chain.usdcMint, 10_000_000n);
  const payToUsdc = await chain.setTokenBalance(payTo.address, chain.usdcMint, 0n);
  return { agent, agentUsdc, payTo, payToUsdc };
}

/** Sends `amount` USDC from the tenant's agent to its recipient (or to `opts.destination`). */
function payUsdc(t: Tenant, amount: bigint, opts: { destination?: Address; skipPreflight?: boolean } = {}) {
  return sendSplTransfer({
    rpcUrl: chain.url,
    payer: t.agent,
    mint: chain.usdcMint,
    source: t.agentUsdc,
    destination: opts.destination ?? t.payToUsdc,
    amount,
    ...(opts.skipPreflight ? { skipPreflight: true } : {}),
  });
}

/** Verifies PRICE of USDC to `payToOwner` at confirmed on mainnet; `extra` changes any of that. */
function verify(
  signature: string,
  payToOwner: string,
  extra: Partial<Parameters<typeof verifySolanaTransfer>[0]> = {},
) {
  return verifySolanaTransfer({
    rpc: httpSolanaRpc(chain.url),
    signature,
    mint: chain.usdcMint,
    payToOwner,
    price: PRICE,
    commitment: "confirmed",
    expectedGenesisPrefix: SOLANA_MAINNET_GENESIS_PREFIX,
    ...extra,
  });
}

describe("verifySolanaTransfer on a litesvm-backed JSON-RPC endpoint", () => {
  it("a real SPL USDC transfer to the recipient verifies with the exact amount and the payer", async () => {
    const t = await tenant();
    const signature = await payUsdc(t, PRICE);
    const result = await verify(signature, t.payTo.address);
    expect(result).toMatchObject({ ok: true, code: "ok", amount: PRICE, from: t.agent.address });
  });

  it("a transfer of another mint with the same decimals is refused as no_usdc_transfer", async () => {
    const t = await tenant();
    const fakeMint = (await generateKeyPairSigner()).address;
    chain.createMint(fakeMint);
    const source = await chain.setTokenBalance(t.agent.address, fakeMint, 10_000_000n);
    const destination = await chain.setTokenBalance(t.payTo.address, fakeMint, 0n);
    const signature = await sendSplTransfer({
      rpcUrl: chain.url,
      payer: t.agent,
      mint: fakeMint,
      source,
      destination,
      amount: PRICE,
    });
    expect(await verify(signature, t.payTo.address)).toMatchObject({ ok: false, code: "no_usdc_transfer" });
  });

  it("USDC sent to another owner is refused as wrong_recipient", async () => {
    const t = await tenant();
    const stranger = await generateKeyPairSigner();
    const strangerUsdc = await chain.setTokenBalance(stranger.address, chain.usdcMint, 0n);
    const signature = await payUsdc(t, PRICE, { destination: strangerUsdc });
    expect(await verify(signature, t.payTo.address)).toMatchObject({ ok: false, code: "wrong_recipient" });
  });

  it("paying more than 2% less is refused as underpaid with paid and required; exactly 2% less passes", async () => {
    const t = await tenant();
    const short = await payUsdc(t, 391_999n);
    expect(await verify(short, t.payTo.address)).toMatchObject({
      ok: false,
      code: "underpaid",
      paid: 391_999n,
      required: PRICE,
    });
    const atTolerance = await payUsdc(t, 392_000n);
    expect(await verify(atTolerance, t.payTo.address)).toMatchObject({ ok: true, amount: 392_000n });
  });

  it("a transaction that failed on-chain (transfer beyond balance) is refused as reverted", async () => {
    const t = await tenant();
    const signature = await payUsdc(t, 50_000_000n, { skipPreflight: true }); // 50 USDC, the agent has 10
    expect(await verify(signature, t.payTo.address)).toMatchObject({
      ok: false,
      code: "reverted",
      retryable: false,
    });
  });

  it("a processed-only transaction is pending and verifies once confirmed; finalized is required when asked", async () => {
    const t = await tenant();
    const signature = await payUsdc(t, PRICE);
    chain.setConfirmation(signature, "processed");
    expect(await verify(signature, t.payTo.address)).toMatchObject({
      ok: false,
      code: "pending",
      retryable: true,
    });
    chain.setConfirmation(signature, "confirmed");
    const finalizedRequired = await verifySolanaTransfer({
      rpc: httpSolanaRpc(chain.url),
      signature,
      mint: chain.usdcMint,
      payToOwner: t.payTo.address,
      price: PRICE,
      commitment: "finalized",
    });
    expect(finalizedRequired).toMatchObject({ ok: false, code: "insufficient_confirmations" });
    expect(await verify(signature, t.payTo.address)).toMatchObject({ ok: true, amount: PRICE });
  });

  it("an unknown signature is not_found and an RPC on another cluster is wrong_chain", async () => {
    const t = await tenant();
    const unknown = "5".repeat(88);
    expect(await verify(unknown, t.payTo.address)).toMatchObject({
      ok: false,
      code: "not_found",
      retryable: true,
    });
    const other = await verify(unknown, t.payTo.address, {
      expectedGenesisPrefix: "EtWTRABZaYq6iMfeYKouRu166VU2xqa1", // devnet
    });
    expect(other).toMatchObject({ ok: false, code: "wrong_chain" });
  });
});
