/**
 * The x402 readiness check: the purchase routes take money only once recipients, assets, the house
 * account and the RPC endpoints are configured and answer. Anything short of that is a refusal that
 * names what is missing (the routes turn it into 503), so a half-configured deploy mints nothing.
 */
import { isAddress as isSolanaAddress } from "@solana/kit";
import {
  type Account,
  type Address,
  type Chain,
  createPublicClient,
  createWalletClient,
  type Hex,
  isAddress,
  isAddressEqual,
  type PublicClient,
  type Transport,
  type WalletClient,
  zeroAddress,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import type { Queryable } from "../../../shared/db/pool.ts";
import { SOLANA_MAINNET_GENESIS_PREFIX } from "../../../shared/x402/networks.ts";
import { httpSolanaRpc, type SolanaRpcCall } from "../../../shared/x402/verify-solana.ts";
import type { Config } from "../config.ts";
import { baseChain } from "./base-chain.ts";

export interface BaseRail {
  client: PublicClient<Transport, Chain>;
  payTo: Address;
  usdc: Address;
  chainId: number;
  confirmations: number;
  /** Present only when X402_GAS_WALLET_KEY is set: settles EIP-3009 authorizations. */
  gasWallet: WalletClient<Transport, Chain, Account> | null;
}

export interface SolanaRail {
  rpc: SolanaRpcCall;
  payTo: string;
  mint: string;
}

export interface X402Rails {
  houseAccountId: string;
  base: BaseRail | null;
  solana: SolanaRail | null;
}

export type X402Readiness = { ok: true; rails: X402Rails } | { ok: false; problems: string[] };

/** Builds the rails from config without any I/O; problems name the variable to fix. */
export function railsFromConfig(config: Config): X402Readiness {
  const problems: string[] = [];
  const houseAccountId = config.X402_HOUSE_ACCOUNT_ID ?? "";
  if (!houseAccountId) problems.push("X402_HOUSE_ACCOUNT_ID is not set");

  let base: BaseRail | null = null;
  const baseWanted = Boolean(config.X402_BASE_RPC_URL || config.X402_BASE_PAY_TO);
  if (baseWanted) {
    const rpcUrl = config.X402_BASE_RPC_URL ?? "";
    const payTo = config.X402_BASE_PAY_TO ?? "";
    const usdc = config.X402_BASE_USDC;
    if (!/^https?:\/\/\S+$/.test(rpcUrl)) problems.push("X402_BASE_RPC_URL must be an http(s) URL");
    if (!isAddress(usdc, { strict: false })) problems.push("X402_BASE_USDC is not an EVM address");
    if (!isAddress(payTo, { strict: false }) || isAddressEqual(payTo as Address, zeroAddress))
      problems.push("X402_BASE_PAY_TO must be a non-zero EVM address");
    else if (isAddress(usdc, { strict: false }) && isAddressEqual(payTo as Address, usdc as Address))
      problems.push("X402_BASE_PAY_TO is the USDC contract itself, not a recipient");
    let gasAccount: Account | null = null;
    if (config.X402_GAS_WALLET_KEY !== undefined) {
      if (/^0x[0-9a-fA-F]{64}$/.test(config.X402_GAS_WALLET_KEY))
        gasAccount = privateKeyToAccount(config.X402_GAS_WALLET_KEY as Hex);
      else problems.push("X402_GAS_WALLET_KEY must be a 0x-prefixed 32-byte hex private key");
    }
    if (problems.length === 0) {
      const { chain, transport } = baseChain(config.X402_BASE_CHAIN_ID, rpcUrl);
      base = {
        // Base makes a block every 2 s; viem's 4 s default polling would double the wait for receipts.
        client: createPublicClient({ chain, transport, pollingInterval: 1_000 }),
        payTo: payTo as Address,
        usdc: usdc as Address,
        chainId: config.X402_BASE_CHAIN_ID,
        confirmations: config.X402_CONFIRMATIONS,
        gasWallet: gasAccount ? createWalletClient({ account: gasAccount, chain, transport }) : null,
      };
    }
  }

  let solana: SolanaRail | null = null;
  const solanaWanted = Boolean(config.X402_SOLANA_RPC_URL || config.X402_SOLANA_PAY_TO);
  if (solanaWanted) {
    const rpcUrl = config.X402_SOLANA_RPC_URL ?? "";
    const payTo = config.X402_SOLANA_PAY_TO ?? "";
    const before = problems.length;
    if (!/^https?:\/\/\S+$/.test(rpcUrl)) problems.push("X402_SOLANA_RPC_URL must be an http(s) URL");
    if (!isSolanaAddress(payTo)) problems.push("X402_SOLANA_PAY_TO must be a Solana address (base58)");
    if (!isSolanaAddress(config.X402_SOLANA_USDC_MINT))
      problems.push("X402_SOLANA_USDC_MINT must be a Solana address (base58)");
    if (problems.length === before)
      solana = { rpc: httpSolanaRpc(rpcUrl), payTo, mint: config.X402_SOLANA_USDC_MINT };
  }
  if (!baseWanted && !solanaWanted)
    problems.push("no payment rail: set X402_BASE_RPC_URL and X402_BASE_PAY_TO (or the X402_SOLANA_* pair)");

  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, rails: { houseAccountId, base, solana } };
}

/** Talks to Postgres and each RPC once: house account exists, chains are the right ones, assets exist. */
async function probeRails(db: Queryable, rails: X402Rails): Promise<string[]> {
  const problems: string[] = [];
  const checks: Promise<void>[] = [];
  checks.push(
    db
      .query<{ kind: string }>("SELECT kind FROM accounts WHERE id = $1", [rails.houseAccountId])
      .then(({ rows }) => {
        if (!rows[0]) problems.push(`X402_HOUSE_ACCOUNT_ID ${rails.houseAccountId} is not an account`);
        else if (rows[0].kind !== "house")
          problems.push(
            `X402_HOUSE_ACCOUNT_ID ${rails.houseAccountId} is a ${rows[0].kind} account, not house`,
          );
      })
      .catch(() => void problems.push("Postgres is unreachable (house account check)")),
  );
  const { base, solana } = rails;
  if (base) {
    checks.push(
      (async () => {
        try {
          const chainId = await base.client.getChainId();
          if (chainId !== base.chainId) {
            problems.push(
              `X402_BASE_RPC_URL serves chain ${chainId}, not X402_BASE_CHAIN_ID ${base.chainId}`,
            );
            return;
          }
          const code = await base.client.getCode({ address: base.usdc });
          if (!code || code === "0x")
            problems.push(`X402_BASE_USDC ${base.usdc} has no contract on chain ${chainId}`);
        } catch {
          problems.push("X402_BASE_RPC_URL is unreachable");
        }
      })(),
    );
  }
  if (solana) {
    checks.push(
      (async () => {
        try {
          const genesis = await solana.rpc("getGenesisHash", []);
          if (typeof genesis !== "string" || !genesis.startsWith(SOLANA_MAINNET_GENESIS_PREFIX))
            problems.push("X402_SOLANA_RPC_URL does not serve Solana mainnet");
        } catch {
          problems.push("X402_SOLANA_RPC_URL is unreachable");
        }
      })(),
    );
  }
  await Promise.all(checks);
  return problems;
}

// Per isolate: a passing check is trusted for a minute, a failing one is retried after a few
// seconds so a deploy that just got its last variable starts selling promptly.
const PASS_TTL_MS = 60_000;
const FAIL_TTL_MS = 5_000;
const checked = new WeakMap<Config, { at: number; problems: string[] }>();

/** The rails, once configured and reachable; otherwise what is wrong. Cached per isolate. */
export async function x402Readiness(deps: {
  config: Config;
  db: Queryable;
  now(): Date;
}): Promise<X402Readiness> {
  const built = railsFromConfig(deps.config);
  if (!built.ok) return built;
  const now = deps.now().getTime();
  const cached = checked.get(deps.config);
  if (cached && now - cached.at < (cached.problems.length ? FAIL_TTL_MS : PASS_TTL_MS)) {
    return cached.problems.length ? { ok: false, problems: cached.problems } : built;
  }
  const problems = await probeRails(deps.db, built.rails);
  checked.set(deps.config, { at: now, problems });
  return problems.length ? { ok: false, problems } : built;
}
