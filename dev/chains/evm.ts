// Local EVM chain for development and tests: anvil (from npm) as chain 8453 on loopback, with a
// USDC-like token (6 decimals, EIP-3009) at the canonical Base USDC address, a funded demo agent,
// a recipient, a server gas wallet, and an identical token at another address that must never count
// as USDC. Dev only: production talks to a real Base RPC.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type Account,
  type Address,
  type Chain,
  createPublicClient,
  createTestClient,
  createWalletClient,
  defineChain,
  type Hex,
  http,
  nonceManager,
  type PublicClient,
  parseAbi,
  parseEther,
  type TestClient,
  type Transport,
  type WalletClient,
} from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { BASE_CHAIN_ID, BASE_USDC_ADDRESS } from "../../shared/x402/networks.ts";
import { startProcess } from "../proc.ts";

export const devUsdcAbi = parseAbi([
  "function name() view returns (string)",
  "function version() view returns (string)",
  "function decimals() view returns (uint8)",
  "function totalSupply() view returns (uint256)",
  "function balanceOf(address) view returns (uint256)",
  "function authorizationState(address authorizer, bytes32 nonce) view returns (bool)",
  "function DOMAIN_SEPARATOR() view returns (bytes32)",
  "function initialize(address newMinter)",
  "function mint(address to, uint256 value)",
  "function transfer(address to, uint256 value) returns (bool)",
  "function approve(address spender, uint256 value) returns (bool)",
  "function transferFrom(address from, address to, uint256 value) returns (bool)",
  "function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)",
  "event Transfer(address indexed from, address indexed to, uint256 value)",
]);

export interface EvmChain {
  rpcUrl: string;
  chain: Chain;
  /** The dev token at the canonical Base USDC address. */
  usdc: Address;
  /** The same token code at another address: its Transfer events must never verify. */
  fakeUsdc: Address;
  /** Demo agent wallet, funded with ETH and USDC. */
  agent: PrivateKeyAccount;
  /**
   * Dev-only keys, generated per run: the local stack hands them to the demo agent and the API; the
   * x402 test fixture hands payTo and minter to its test processes.
   */
  keys: { agent: Hex; gasWallet: Hex; payTo: Hex; minter: Hex };
  /** The pinned recipient of payments. */
  payTo: PrivateKeyAccount;
  /** The server wallet that pays gas to settle EIP-3009 authorizations. */
  gasWallet: PrivateKeyAccount;
  /** May mint both tokens. */
  minter: PrivateKeyAccount;
  publicClient: PublicClient<Transport, Chain>;
  testClient: TestClient<"anvil", Transport, Chain>;
  walletFor(account: Account): WalletClient<Transport, Chain, Account>;
  /** Mints dev USDC (or the fake token) and waits for the receipt. */
  mint(to: Address, amountMicro: bigint, token?: Address): Promise<void>;
  /** A fresh account with ETH for gas (and optionally USDC), for a test's own tenant. */
  newFundedAccount(usdcMicro?: bigint): Promise<PrivateKeyAccount>;
  stop(): Promise<void>;
}

export interface StartEvmChainOptions {
  /** USDC minted to the demo agent, micro-USDC (default 1,000 USDC). */
  agentUsdcMicro?: bigint;
  echo?: boolean;
}

interface CompiledContract {
  creation: Hex;
  runtime: Hex;
}

const compiled = new Map<string, CompiledContract>();

/**
 * Compiles dev/chains/contracts/<name>.sol with solc (npm, wasm); once per process, and once per
 * source and solc version on this checkout: loading solc alone costs a second of CPU, paid by every
 * `npm start` and every test file with a chain before the artifacts were cached in
 * node_modules/.cache/peerproxy-contracts/.
 */
export function compileDevContract(name: "DevUSDC" | "SplitPayer"): CompiledContract {
  const cached = compiled.get(name);
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const solcDir = dirname(require.resolve("solc/package.json"));
  const solcVersion = (JSON.parse(readFileSync(join(solcDir, "package.json"), "utf8")) as { version: string })
    .version;
  const file = `${name}.sol`;
  const source = readFileSync(fileURLToPath(new URL(`./contracts/${file}`, import.meta.url)), "utf8");
  const input = JSON.stringify({
    language: "Solidity",
    sources: { [file]: { content: source } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { "*": { [name]: ["evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  });
  const cacheDir = join(solcDir, "..", ".cache", "peerproxy-contracts");
  const cacheFile = join(
    cacheDir,
    `${name}-${createHash("sha256").update(`${solcVersion}\n${input}`).digest("hex").slice(0, 16)}.json`,
  );
  try {
    const artifact = JSON.parse(readFileSync(cacheFile, "utf8")) as CompiledContract;
    if (/^0x[0-9a-f]+$/.test(artifact.creation) && /^0x[0-9a-f]+$/.test(artifact.runtime)) {
      compiled.set(name, artifact);
      return artifact;
    }
  } catch {} // not compiled on this checkout yet (or unreadable): compile below
  const solc = require("solc") as { compile(input: string): string };
  const output = JSON.parse(solc.compile(input)) as {
    errors?: { severity: string; formattedMessage: string }[];
    contracts?: Record<
      string,
      Record<string, { evm: { bytecode: { object: string }; deployedBytecode: { object: string } } }>
    >;
  };
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length > 0)
    throw new Error(`${file} does not compile:\n${errors.map((e) => e.formattedMessage).join("\n")}`);
  const evm = output.contracts?.[file]?.[name]?.evm;
  if (!evm) throw new Error(`solc produced no ${name} artifact`);
  const artifact: CompiledContract = {
    creation: `0x${evm.bytecode.object}`,
    runtime: `0x${evm.deployedBytecode.object}`,
  };
  compiled.set(name, artifact);
  try {
    // Written aside and renamed: a process reading it meanwhile sees the whole file or none.
    mkdirSync(cacheDir, { recursive: true });
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(artifact));
    renameSync(tmp, cacheFile);
  } catch {} // a read-only node_modules: compile again next time
  return artifact;
}

/** newFundedAccount for a chain: a fresh key with 10 ETH for gas and, if asked, some USDC. */
export function fundedAccounts(
  testClient: Pick<EvmChain["testClient"], "setBalance">,
  mint: EvmChain["mint"],
): EvmChain["newFundedAccount"] {
  return async (usdcMicro = 0n) => {
    const account = privateKeyToAccount(generatePrivateKey());
    await testClient.setBalance({ address: account.address, value: parseEther("10") });
    if (usdcMicro > 0n) await mint(account.address, usdcMicro);
    return account;
  };
}

/** Starts anvil on a free loopback port and sets up the tokens and wallets described above. */
export async function startEvmChain(opts: StartEvmChainOptions = {}): Promise<EvmChain> {
  const token = compileDevContract("DevUSDC");
  const anvilBin = fileURLToPath(new URL("../../node_modules/@foundry-rs/anvil/bin.mjs", import.meta.url));
  // Port 0: anvil binds a free port itself and prints it, so no race with other test files.
  const proc = startProcess(
    "anvil",
    process.execPath,
    [anvilBin, "--chain-id", String(BASE_CHAIN_ID), "--host", "127.0.0.1", "--port", "0", "--accounts", "1"],
    { echo: opts.echo ?? false },
  );
  try {
    const m = await proc.waitFor(/Listening on 127\.0\.0\.1:(\d+)/, 20_000);
    const rpcUrl = `http://127.0.0.1:${m[1]}`;
    const chain = defineChain({
      id: BASE_CHAIN_ID,
      name: "Base (local anvil)",
      nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
      rpcUrls: { default: { http: [rpcUrl] } },
    });
    const transport = http(rpcUrl);
    const publicClient = createPublicClient({ chain, transport, pollingInterval: 50, cacheTime: 0 });
    const testClient = createTestClient({ chain, transport, mode: "anvil" });
    const walletFor = (account: Account) => createWalletClient({ chain, transport, account });

    const agentKey = generatePrivateKey();
    const agent = privateKeyToAccount(agentKey);
    const payToKey = generatePrivateKey();
    const payTo = privateKeyToAccount(payToKey);
    // Tests mint concurrently: viem's nonce manager hands the minter's nonces out locally so
    // concurrent mints never reuse a pending nonce. (The gas wallet is serialized by eip3009.ts.)
    const gasWalletKey = generatePrivateKey();
    const gasWallet = privateKeyToAccount(gasWalletKey);
    const minterKey = generatePrivateKey();
    const minter = privateKeyToAccount(minterKey, { nonceManager });
    for (const account of [minter, agent, gasWallet])
      await testClient.setBalance({ address: account.address, value: parseEther("100") });

    const minterWallet = walletFor(minter);
    const waitFor = async (hash: Hex) => {
      const receipt = await publicClient.waitForTransactionReceipt({ hash });
      if (receipt.status !== "success") throw new Error(`setup transaction ${hash} reverted`);
      return receipt;
    };

    await testClient.setCode({ address: BASE_USDC_ADDRESS, bytecode: token.runtime });
    await waitFor(
      await minterWallet.writeContract({
        address: BASE_USDC_ADDRESS,
        abi: devUsdcAbi,
        functionName: "initialize",
        args: [minter.address],
      }),
    );
    const deployed = await waitFor(
      await minterWallet.deployContract({ abi: devUsdcAbi, bytecode: token.creation }),
    );
    const fakeUsdc = deployed.contractAddress!;
    await waitFor(
      await minterWallet.writeContract({
        address: fakeUsdc,
        abi: devUsdcAbi,
        functionName: "initialize",
        args: [minter.address],
      }),
    );

    const mint = async (to: Address, amountMicro: bigint, tokenAddress: Address = BASE_USDC_ADDRESS) => {
      await waitFor(
        await minterWallet.writeContract({
          address: tokenAddress,
          abi: devUsdcAbi,
          functionName: "mint",
          args: [to, amountMicro],
        }),
      );
    };
    await mint(agent.address, opts.agentUsdcMicro ?? 1_000_000_000n);

    return {
      rpcUrl,
      chain,
      usdc: BASE_USDC_ADDRESS,
      fakeUsdc,
      agent,
      keys: { agent: agentKey, gasWallet: gasWalletKey, payTo: payToKey, minter: minterKey },
      payTo,
      gasWallet,
      minter,
      publicClient,
      testClient,
      walletFor,
      mint,
      newFundedAccount: fundedAccounts(testClient, mint),
      async stop() {
        await proc.stop();
      },
    };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}
