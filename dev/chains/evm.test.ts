import { hashDomain } from "viem";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BASE_CHAIN_ID, BASE_USDC_ADDRESS, BASE_USDC_EIP712 } from "../../shared/x402/networks.ts";
import { devUsdcAbi, type EvmChain, startEvmChain } from "./evm.ts";

let chain: EvmChain;

beforeAll(async () => {
  chain = await startEvmChain({ agentUsdcMicro: 25_000_000n });
});
afterAll(async () => {
  await chain?.stop();
});

describe("startEvmChain: anvil as Base with USDC at its canonical address", () => {
  it("serves chain id 8453 on a loopback URL", async () => {
    expect(chain.rpcUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await chain.publicClient.getChainId()).toBe(BASE_CHAIN_ID);
  });

  it("the token at the canonical address reports USD Coin, 6 decimals and Base USDC's EIP-712 domain", async () => {
    const token = { address: BASE_USDC_ADDRESS, abi: devUsdcAbi } as const;
    const read = chain.publicClient.readContract;
    expect(await read({ ...token, functionName: "name" })).toBe(BASE_USDC_EIP712.name);
    expect(await read({ ...token, functionName: "version" })).toBe(BASE_USDC_EIP712.version);
    expect(await read({ ...token, functionName: "decimals" })).toBe(6);
    expect(await read({ ...token, functionName: "DOMAIN_SEPARATOR" })).toBe(
      hashDomain({
        domain: { ...BASE_USDC_EIP712, chainId: BigInt(BASE_CHAIN_ID), verifyingContract: BASE_USDC_ADDRESS },
        types: {
          EIP712Domain: [
            { name: "name", type: "string" },
            { name: "version", type: "string" },
            { name: "chainId", type: "uint256" },
            { name: "verifyingContract", type: "address" },
          ],
        },
      }),
    );
  });

  it("funds the demo agent with USDC and ETH and the gas wallet with ETH only", async () => {
    const usdcOf = (address: `0x${string}`) =>
      chain.publicClient.readContract({
        address: chain.usdc,
        abi: devUsdcAbi,
        functionName: "balanceOf",
        args: [address],
      });
    expect(await usdcOf(chain.agent.address)).toBe(25_000_000n);
    expect(await chain.publicClient.getBalance({ address: chain.agent.address })).toBeGreaterThan(0n);
    expect(await usdcOf(chain.gasWallet.address)).toBe(0n);
    expect(await chain.publicClient.getBalance({ address: chain.gasWallet.address })).toBeGreaterThan(0n);
  });

  it("the fake token lives at another address with the same code", async () => {
    expect(chain.fakeUsdc.toLowerCase()).not.toBe(BASE_USDC_ADDRESS.toLowerCase());
    const [real, fake] = await Promise.all([
      chain.publicClient.getCode({ address: chain.usdc }),
      chain.publicClient.getCode({ address: chain.fakeUsdc }),
    ]);
    expect(fake).toBe(real);
  });

  it("stop() ends anvil: the RPC stops answering", async () => {
    const other = await startEvmChain();
    await other.stop();
    await expect(other.publicClient.getChainId()).rejects.toThrow();
  });
});
