/**
 * The x402 fixture shared by the test files of the `x402` vitest project (vitest.config.ts): one
 * anvil chain, one customer gateway and one API under `wrangler dev` for the whole run, started by
 * `x402.global.ts` and reached here through vitest's provide/inject. Each test still makes its own
 * tenant: payers, accounts and modems of its own, cleaned up by payer, never by the shared house
 * account. Files that need their own process (special API vars, manual mining, two isolates) start
 * it themselves and only borrow the chain.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type Account,
  type Address,
  createPublicClient,
  createTestClient,
  createWalletClient,
  defineChain,
  encodeAbiParameters,
  type Hex,
  http,
  keccak256,
  pad,
  toHex,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { inject } from "vitest";
import { devUsdcAbi, type EvmChain, fundedAccounts } from "../../dev/chains/evm.ts";
import { BASE_CHAIN_ID, BASE_USDC_ADDRESS } from "../../shared/x402/networks.ts";

export interface X402Fixture {
  rpcUrl: string;
  fakeUsdc: Address;
  payToKey: Hex;
  agentKey: Hex;
  gasWalletKey: Hex;
  minterKey: Hex;
  /** The shared API: purchases paid on the chain, minted under `houseAccountId`. */
  apiUrl: string;
  /** wrangler's log directory of the shared API (WRANGLER_LOG_PATH), for failure output. */
  apiLogDir: string;
  houseAccountId: string;
  /** The house account's name: the `psx_<name>` part of every username it mints. */
  houseName: string;
  /** The shared gateway's HTTP proxy port; the shared API's answers point at it. */
  gatewayHttpPort: number;
}

declare module "vitest" {
  export interface ProvidedContext {
    /** Where x402.global.ts writes `{fixture}` (or `{error}`) once the boot finished. */
    x402FixtureFile: string;
  }
}

/**
 * The run's shared x402 fixture, once booted (the boot runs beside the first test files); only
 * files of the `x402` vitest project have it.
 */
export async function sharedX402(timeoutMs = 180_000): Promise<X402Fixture> {
  const file = inject("x402FixtureFile");
  if (!file) throw new Error("no x402 fixture: this file must be in the x402 project of vitest.config.ts");
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`x402 fixture not up within ${timeoutMs} ms`);
    await sleep(100);
  }
  const got = JSON.parse(readFileSync(file, "utf8")) as { fixture?: X402Fixture; error?: string };
  if (!got.fixture) throw new Error(`x402 fixture failed to boot:\n${got.error}`);
  return got.fixture;
}

/** The tail of the shared API's log, for a failing test's output. */
export function sharedApiOutput(f: X402Fixture, chars = 4000): string {
  try {
    const logs = readdirSync(f.apiLogDir).filter((n) => n.endsWith(".log"));
    return logs
      .map((n) => readFileSync(join(f.apiLogDir, n), "utf8"))
      .join("\n")
      .slice(-chars);
  } catch {
    return "";
  }
}

/**
 * The shared anvil chain as an `EvmChain` for this test process. Mints set the token balance
 * directly (no transaction, so no nonce shared between processes). `stop()` is a no-op: the run
 * owns the chain.
 */
export function connectEvmChain(f: X402Fixture): EvmChain {
  const chain = defineChain({
    id: BASE_CHAIN_ID,
    name: "Base (local anvil, shared)",
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [f.rpcUrl] } },
  });
  const transport = http(f.rpcUrl);
  const publicClient = createPublicClient({ chain, transport, pollingInterval: 50, cacheTime: 0 });
  const testClient = createTestClient({ chain, transport, mode: "anvil" });
  const walletFor = (account: Account) => createWalletClient({ chain, transport, account });
  const minter = privateKeyToAccount(f.minterKey);
  const mint = async (to: Address, amountMicro: bigint, token: Address = BASE_USDC_ADDRESS) => {
    // Writes the balance slot instead of sending mint(): several test processes share one minter,
    // and concurrent sends from it collided on nonces (also while x402-pool holds automine off).
    // DevUSDC's storage: totalSupply 0, minter 1, balanceOf 2 (a mapping). A read-modify-write, so
    // fine for the fresh addresses tests fund; the check below fails loudly if the layout moves.
    const slot = keccak256(encodeAbiParameters([{ type: "address" }, { type: "uint256" }], [to, 2n]));
    const balance = (t: Address) =>
      publicClient.readContract({ address: t, abi: devUsdcAbi, functionName: "balanceOf", args: [to] });
    const want = (await balance(token)) + amountMicro;
    await testClient.setStorageAt({ address: token, index: slot, value: pad(toHex(want)) });
    if ((await balance(token)) !== want) throw new Error(`mint: DevUSDC balance slot moved (${token})`);
  };
  return {
    rpcUrl: f.rpcUrl,
    chain,
    usdc: BASE_USDC_ADDRESS,
    fakeUsdc: f.fakeUsdc,
    agent: privateKeyToAccount(f.agentKey),
    keys: { agent: f.agentKey, gasWallet: f.gasWalletKey, payTo: f.payToKey, minter: f.minterKey },
    payTo: privateKeyToAccount(f.payToKey),
    gasWallet: privateKeyToAccount(f.gasWalletKey),
    minter,
    publicClient,
    testClient,
    walletFor,
    mint,
    newFundedAccount: fundedAccounts(testClient, mint),
    async stop() {},
  };
}
