// The two payment rails and their pinned assets. The 402, the verifiers and the local chains all
// read these, so a typo cannot make one of them accept a different token than the others announce.

/** Real USDC on Base mainnet (FiatTokenV2_2); the local anvil chain places its dev token here too. */
export const BASE_USDC_ADDRESS = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913" as const;
export const BASE_CHAIN_ID = 8453;
/** EIP-712 domain of USDC on Base; EIP-3009 authorizations are signed against it. */
export const BASE_USDC_EIP712 = { name: "USD Coin", version: "2" } as const;

/** Real USDC mint on Solana mainnet; the litesvm test endpoint creates its mint here too. */
export const SOLANA_USDC_MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v" as const;
/** CAIP-2 reference of Solana mainnet: the first 32 characters of its genesis hash. */
export const SOLANA_MAINNET_GENESIS_PREFIX = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";

export const USDC_DECIMALS = 6;

/** x402 v1 network names and their x402 v2 (CAIP-2) equivalents. */
export const CAIP2 = {
  base: `eip155:${BASE_CHAIN_ID}`,
  solana: `solana:${SOLANA_MAINNET_GENESIS_PREFIX}`,
} as const;

export type PaymentNetwork = keyof typeof CAIP2;
