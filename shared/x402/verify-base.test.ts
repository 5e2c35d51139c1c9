import { createPublicClient, encodeFunctionData, type Hex, http, parseAbi } from "viem";
import type { PrivateKeyAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileDevContract, devUsdcAbi, type EvmChain, startEvmChain } from "../../dev/chains/evm.ts";
import { BASE_CHAIN_ID, BASE_USDC_ADDRESS } from "./networks.ts";
import { verifyBaseTransfer } from "./verify-base.ts";

const PRICE = 400_000n; // 0.1 GB at $4/GB
const splitPayerAbi = parseAbi([
  "function payInTwo(address token, address to, uint256 first, uint256 second)",
]);

let chain: EvmChain;

beforeAll(async () => {
  chain = await startEvmChain();
});
afterAll(async () => {
  await chain?.stop();
});

async function pay(from: PrivateKeyAccount, to: Hex, amount: bigint, token: Hex = chain.usdc): Promise<Hex> {
  const hash = await chain
    .walletFor(from)
    .writeContract({ address: token, abi: devUsdcAbi, functionName: "transfer", args: [to, amount] });
  await chain.publicClient.waitForTransactionReceipt({ hash });
  return hash;
}

function verify(
  txHash: string,
  overrides: { price?: bigint; confirmations?: number; chainId?: number } = {},
) {
  return verifyBaseTransfer({
    client: chain.publicClient,
    txHash,
    usdc: BASE_USDC_ADDRESS,
    payTo: chain.payTo.address,
    expectedChainId: overrides.chainId ?? BASE_CHAIN_ID,
    price: overrides.price ?? PRICE,
    confirmations: overrides.confirmations ?? 1,
  });
}

describe("verifyBaseTransfer on anvil (chain 8453, dev USDC at the canonical address)", () => {
  it("a real USDC transfer to the recipient verifies with amount, payer and block", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const hash = await pay(agent, chain.payTo.address, PRICE);
    const result = await verify(hash);
    expect(result).toMatchObject({ ok: true, code: "ok", amount: PRICE, from: agent.address });
    expect(result.ok && result.blockNumber > 0n).toBe(true);
  });

  it("USDC sent to another address is refused as wrong_recipient", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const stranger = await chain.newFundedAccount();
    const hash = await pay(agent, stranger.address, PRICE);
    expect(await verify(hash)).toMatchObject({ ok: false, code: "wrong_recipient", retryable: false });
  });

  it("the same Transfer event from an identical token at another address is refused as no_usdc_transfer", async () => {
    const agent = await chain.newFundedAccount();
    await chain.mint(agent.address, 10_000_000n, chain.fakeUsdc);
    const hash = await pay(agent, chain.payTo.address, PRICE, chain.fakeUsdc);
    const receipt = await chain.publicClient.getTransactionReceipt({ hash });
    expect(receipt.logs).toHaveLength(1); // a genuine Transfer log, just from the wrong contract
    expect(await verify(hash)).toMatchObject({ ok: false, code: "no_usdc_transfer" });
  });

  it("paying more than 2% less is underpaid with paid and required; exactly 2% less passes", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const short = await pay(agent, chain.payTo.address, 391_999n);
    expect(await verify(short)).toMatchObject({
      ok: false,
      code: "underpaid",
      paid: 391_999n,
      required: PRICE,
    });
    const atTolerance = await pay(agent, chain.payTo.address, 392_000n);
    expect(await verify(atTolerance)).toMatchObject({ ok: true, amount: 392_000n });
  });

  it("two USDC Transfer logs to the recipient in one transaction are summed", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const splitter = await chain
      .walletFor(agent)
      .deployContract({ abi: splitPayerAbi, bytecode: compileDevContract("SplitPayer").creation });
    const splitterAddress = (await chain.publicClient.waitForTransactionReceipt({ hash: splitter }))
      .contractAddress!;
    const approve = await chain.walletFor(agent).writeContract({
      address: chain.usdc,
      abi: devUsdcAbi,
      functionName: "approve",
      args: [splitterAddress, PRICE],
    });
    await chain.publicClient.waitForTransactionReceipt({ hash: approve });
    const hash = await chain.walletFor(agent).writeContract({
      address: splitterAddress,
      abi: splitPayerAbi,
      functionName: "payInTwo",
      args: [chain.usdc, chain.payTo.address, 150_000n, 250_000n],
    });
    const receipt = await chain.publicClient.waitForTransactionReceipt({ hash });
    expect(receipt.logs.length).toBeGreaterThanOrEqual(2);
    expect(await verify(hash)).toMatchObject({ ok: true, amount: PRICE, from: agent.address });
  });

  it("a reverted transaction is refused as reverted", async () => {
    const agent = await chain.newFundedAccount(1_000n);
    // Explicit gas skips estimation, so the failing transfer is mined (status 0) instead of refused.
    const hash = await chain.walletFor(agent).sendTransaction({
      to: chain.usdc,
      data: encodeFunctionData({
        abi: devUsdcAbi,
        functionName: "transfer",
        args: [chain.payTo.address, PRICE],
      }),
      gas: 100_000n,
    });
    const receipt = await chain.publicClient.waitForTransactionReceipt({ hash });
    expect(receipt.status).toBe("reverted");
    expect(await verify(hash)).toMatchObject({ ok: false, code: "reverted", retryable: false });
  });

  it("a transaction in the mempool is pending (retryable) and verifies once mined", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    await chain.testClient.setAutomine(false);
    try {
      const hash = await chain.walletFor(agent).writeContract({
        address: chain.usdc,
        abi: devUsdcAbi,
        functionName: "transfer",
        args: [chain.payTo.address, PRICE],
      });
      expect(await verify(hash)).toMatchObject({ ok: false, code: "pending", retryable: true });
      await chain.testClient.mine({ blocks: 1 });
      expect(await verify(hash)).toMatchObject({ ok: true, amount: PRICE });
    } finally {
      await chain.testClient.setAutomine(true);
    }
  });

  it("an unknown hash is not_found and a malformed one never reaches the RPC", async () => {
    expect(await verify(`0x${"ab".repeat(32)}`)).toMatchObject({
      ok: false,
      code: "not_found",
      retryable: true,
    });
    expect(await verify("0x1234")).toMatchObject({ ok: false, code: "not_found" });
  });

  it("an RPC serving another chain id is refused as wrong_chain", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const hash = await pay(agent, chain.payTo.address, PRICE);
    expect(await verify(hash, { chainId: 84532 })).toMatchObject({ ok: false, code: "wrong_chain" });
  });

  it("fewer blocks than the required confirmations is insufficient_confirmations until the chain grows", async () => {
    const agent = await chain.newFundedAccount(10_000_000n);
    const hash = await pay(agent, chain.payTo.address, PRICE);
    expect(await verify(hash, { confirmations: 3 })).toMatchObject({
      ok: false,
      code: "insufficient_confirmations",
      confirmations: 1n,
      retryable: true,
    });
    await chain.testClient.mine({ blocks: 2 });
    expect(await verify(hash, { confirmations: 3 })).toMatchObject({ ok: true });
  });

  it("an unreachable RPC is rpc_error (retryable), never a throw", async () => {
    const dead = createPublicClient({
      chain: chain.chain,
      transport: http("http://127.0.0.1:1", { retryCount: 0 }),
    });
    const result = await verifyBaseTransfer({
      client: dead,
      txHash: `0x${"ab".repeat(32)}`,
      usdc: BASE_USDC_ADDRESS,
      payTo: chain.payTo.address,
      expectedChainId: BASE_CHAIN_ID,
      price: PRICE,
      confirmations: 1,
    });
    expect(result).toMatchObject({ ok: false, code: "rpc_error", retryable: true });
  });
});
