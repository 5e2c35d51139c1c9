/** The Base chain and the RPC transport every on-chain service of the API uses (x402 settlement, payouts). */
import { defineChain, http } from "viem";

export function baseChain(chainId: number, rpcUrl: string) {
  const chain = defineChain({
    id: chainId,
    name: "base",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [rpcUrl] } },
  });
  return { chain, transport: http(rpcUrl, { retryCount: 1, timeout: 10_000 }) };
}
