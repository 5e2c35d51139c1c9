// Test-only Solana JSON-RPC endpoint on loopback, backed by litesvm, which executes real SPL Token
// transfers in-process. No Solana validator ships on any registry we reach, so this small fake stands
// in for the node: it serves just the methods our verifier and our test clients call, in the shapes
// the real RPC uses (getTransaction jsonParsed with pre/post token balances, getSignatureStatuses...).
import { createServer, type IncomingMessage, type Server } from "node:http";
import {
  type Address,
  getBase58Decoder,
  getBase58Encoder,
  getBase64Encoder,
  getCompiledTransactionMessageDecoder,
  getTransactionDecoder,
  lamports,
} from "@solana/kit";
import {
  type AccountState,
  findAssociatedTokenPda,
  getMintEncoder,
  getTokenDecoder,
  getTokenEncoder,
  TOKEN_PROGRAM_ADDRESS,
} from "@solana-program/token";
import { FailedTransactionMetadata, LiteSVM } from "litesvm";
import { SOLANA_USDC_MINT } from "../../shared/x402/networks.ts";

// Legacy and v0 messages share this instruction shape (v1 messages are not used by our clients).
interface CompiledInstruction {
  programAddressIndex: number;
  accountIndices?: number[];
  data?: Uint8Array;
}

type Confirmation = "processed" | "confirmed" | "finalized";

interface TokenBalance {
  accountIndex: number;
  mint: string;
  owner: string;
  programId: string;
  uiTokenAmount: { amount: string; decimals: number; uiAmountString: string };
}

interface RecordedTx {
  slot: number;
  blockTime: number;
  err: unknown;
  signatures: string[];
  accountKeys: { pubkey: string; signer: boolean; writable: boolean; source: "transaction" }[];
  recentBlockhash: string;
  instructions: { programId: string; accounts: string[]; data: string; stackHeight: null }[];
  preBalances: number[];
  postBalances: number[];
  preTokenBalances: TokenBalance[];
  postTokenBalances: TokenBalance[];
  logMessages: string[];
  version: "legacy" | 0;
  confirmation: Confirmation;
}

export interface SolanaTestRpc {
  url: string;
  svm: LiteSVM;
  /** The USDC-like mint at the canonical mainnet USDC address (6 decimals). */
  usdcMint: Address;
  /** A genesis hash starting with the mainnet CAIP-2 reference, like the real cluster's. */
  genesisHash: string;
  /** Creates a 6-decimal mint at `address` (another "USDC" for refusal tests). */
  createMint(address: Address, decimals?: number): void;
  /** Writes the owner's associated token account for `mint` with `amount`; returns its address. */
  setTokenBalance(owner: Address, mint: Address, amount: bigint): Promise<Address>;
  airdrop(address: Address, lamportsAmount: bigint): void;
  /** Overrides the commitment a recorded transaction reports (to test pending answers). */
  setConfirmation(signature: string, confirmation: Confirmation): void;
  /** Moves the block height on by `n` and expires every earlier blockhash (a transaction signed
   *  against one can no longer land), as time passing on the cluster does. */
  advanceBlocks(n: number): void;
  close(): Promise<void>;
}

const MAINNET_GENESIS = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d";

export async function startSolanaTestRpc(): Promise<SolanaTestRpc> {
  const svm = new LiteSVM();
  const history = new Map<string, RecordedTx>();
  const decimalsByMint = new Map<string, number>();
  let slot = 1;

  const createMint = (address: Address, decimals = 6) => {
    const data = getMintEncoder().encode({
      mintAuthority: null,
      supply: 0n,
      decimals,
      isInitialized: true,
      freezeAuthority: null,
    });
    svm.setAccount({
      address,
      data: new Uint8Array(data),
      executable: false,
      lamports: lamports(svm.minimumBalanceForRentExemption(BigInt(data.length))),
      programAddress: TOKEN_PROGRAM_ADDRESS,
      space: BigInt(data.length),
    });
    decimalsByMint.set(address, decimals);
  };
  createMint(SOLANA_USDC_MINT as Address);

  const tokenBalances = (keys: string[]): TokenBalance[] => {
    const out: TokenBalance[] = [];
    keys.forEach((key, accountIndex) => {
      const account = svm.getAccount(key as Address);
      if (!account.exists || account.programAddress !== TOKEN_PROGRAM_ADDRESS || account.data.length !== 165)
        return;
      const token = getTokenDecoder().decode(account.data);
      const decimals = decimalsByMint.get(token.mint) ?? 0;
      out.push({
        accountIndex,
        mint: token.mint,
        owner: token.owner,
        programId: TOKEN_PROGRAM_ADDRESS,
        uiTokenAmount: {
          amount: token.amount.toString(),
          decimals,
          uiAmountString: uiAmount(token.amount, decimals),
        },
      });
    });
    return out;
  };
  const lamportBalances = (keys: string[]) => keys.map((key) => Number(svm.getBalance(key as Address) ?? 0n));

  const sendTransaction = (params: unknown[]): string => {
    const [wire, config] = params as [string, { encoding?: string; skipPreflight?: boolean } | undefined];
    const bytes =
      config?.encoding === "base64" ? getBase64Encoder().encode(wire) : getBase58Encoder().encode(wire);
    const tx = getTransactionDecoder().decode(bytes);
    const message = getCompiledTransactionMessageDecoder().decode(tx.messageBytes);
    const keys = message.staticAccounts.map(String);
    const signatures = Object.values(tx.signatures).map((s) => (s ? getBase58Decoder().decode(s) : ""));
    const signature = signatures[0];
    if (!signature) throw rpcError(-32602, "transaction is not signed");
    const preBalances = lamportBalances(keys);
    const preTokenBalances = tokenBalances(keys);
    const result = svm.sendTransaction(tx);
    const failed = result instanceof FailedTransactionMetadata;
    const meta = failed ? result.meta() : result;
    // Like a real node with preflight on: a failing tx is refused and never lands.
    if (failed && !config?.skipPreflight)
      throw rpcError(-32002, `Transaction simulation failed: ${result.toString()}`, { logs: meta.logs() });
    const { numSignerAccounts, numReadonlySignerAccounts, numReadonlyNonSignerAccounts } = message.header;
    slot += 1;
    history.set(signature, {
      slot,
      blockTime: Math.floor(Date.now() / 1000),
      // The real RPC reports e.g. {"InstructionError":[0,{"Custom":1}]}; litesvm gives us its text form.
      err: failed ? { InstructionError: result.toString() } : null,
      signatures,
      accountKeys: keys.map((pubkey, i) => ({
        pubkey,
        signer: i < numSignerAccounts,
        writable:
          i < numSignerAccounts
            ? i < numSignerAccounts - numReadonlySignerAccounts
            : i < keys.length - numReadonlyNonSignerAccounts,
        source: "transaction" as const,
      })),
      recentBlockhash: String(message.lifetimeToken),
      instructions: ((message as unknown as { instructions?: CompiledInstruction[] }).instructions ?? []).map(
        (ix) => ({
          programId: keys[ix.programAddressIndex] ?? "",
          accounts: (ix.accountIndices ?? []).map((i) => keys[i] ?? ""),
          data: getBase58Decoder().decode(ix.data ?? new Uint8Array()),
          stackHeight: null,
        }),
      ),
      preBalances,
      postBalances: lamportBalances(keys),
      preTokenBalances,
      postTokenBalances: tokenBalances(keys),
      logMessages: meta.logs(),
      version: message.version === "legacy" ? "legacy" : 0,
      confirmation: "finalized",
    });
    return signature;
  };

  const getTransaction = (params: unknown[]) => {
    const [signature, config] = params as [string, { commitment?: Confirmation } | undefined];
    const tx = history.get(signature);
    if (!tx) return null;
    if (tx.confirmation === "processed") return null; // getTransaction serves confirmed or finalized only
    if (config?.commitment === "finalized" && tx.confirmation !== "finalized") return null;
    return {
      slot: tx.slot,
      blockTime: tx.blockTime,
      version: tx.version,
      meta: {
        err: tx.err,
        status: tx.err === null ? { Ok: null } : { Err: tx.err },
        fee: 5000,
        preBalances: tx.preBalances,
        postBalances: tx.postBalances,
        preTokenBalances: tx.preTokenBalances,
        postTokenBalances: tx.postTokenBalances,
        logMessages: tx.logMessages,
        innerInstructions: [],
        loadedAddresses: { writable: [], readonly: [] },
      },
      transaction: {
        signatures: tx.signatures,
        message: {
          accountKeys: tx.accountKeys,
          recentBlockhash: tx.recentBlockhash,
          instructions: tx.instructions,
        },
      },
    };
  };

  const methods: Record<string, (params: unknown[]) => unknown> = {
    getHealth: () => "ok",
    getVersion: () => ({ "solana-core": "litesvm-test", "feature-set": 0 }),
    getGenesisHash: () => MAINNET_GENESIS,
    getSlot: () => slot,
    getBlockHeight: () => slot,
    getLatestBlockhash: () => ({
      context: { slot },
      value: { blockhash: svm.latestBlockhash(), lastValidBlockHeight: slot + 150 },
    }),
    getBalance: ([address]) => ({
      context: { slot },
      value: Number(svm.getBalance(address as Address) ?? 0n),
    }),
    getAccountInfo: ([address]) => {
      const account = svm.getAccount(address as Address);
      if (!account.exists) return { context: { slot }, value: null };
      return {
        context: { slot },
        value: {
          data: [Buffer.from(account.data).toString("base64"), "base64"],
          executable: account.executable,
          lamports: Number(account.lamports),
          owner: account.programAddress,
          rentEpoch: 0,
          space: Number(account.space),
        },
      };
    },
    sendTransaction,
    getTransaction,
    getSignatureStatuses: ([signatures]) => ({
      context: { slot },
      value: (signatures as string[]).map((signature) => {
        const tx = history.get(signature);
        if (!tx) return null;
        return {
          slot: tx.slot,
          confirmations: tx.confirmation === "finalized" ? null : 0,
          err: tx.err,
          status: tx.err === null ? { Ok: null } : { Err: tx.err },
          confirmationStatus: tx.confirmation,
        };
      }),
    }),
  };

  const server: Server = createServer(async (req, res) => {
    let id: unknown = null;
    let payload: unknown;
    try {
      const body = JSON.parse(await readBody(req)) as { id?: unknown; method?: string; params?: unknown[] };
      id = body.id ?? null;
      const method = body.method ? methods[body.method] : undefined;
      if (!method) throw rpcError(-32601, `Method not found: ${body.method}`);
      payload = { jsonrpc: "2.0", id, result: method(body.params ?? []) };
    } catch (err) {
      const e = err as { rpc?: { code: number; message: string; data?: unknown } };
      payload = { jsonrpc: "2.0", id, error: e.rpc ?? { code: -32603, message: String(err) } };
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(payload, (_k, v) => (typeof v === "bigint" ? Number(v) : v)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;

  return {
    url: `http://127.0.0.1:${port}`,
    svm,
    usdcMint: SOLANA_USDC_MINT as Address,
    genesisHash: MAINNET_GENESIS,
    createMint,
    async setTokenBalance(owner, mint, amount) {
      const [ata] = await findAssociatedTokenPda({ owner, mint, tokenProgram: TOKEN_PROGRAM_ADDRESS });
      const data = getTokenEncoder().encode({
        mint,
        owner,
        amount,
        delegate: null,
        state: 1 as AccountState, // Initialized
        isNative: null,
        delegatedAmount: 0n,
        closeAuthority: null,
      });
      svm.setAccount({
        address: ata,
        data: new Uint8Array(data),
        executable: false,
        lamports: lamports(svm.minimumBalanceForRentExemption(BigInt(data.length))),
        programAddress: TOKEN_PROGRAM_ADDRESS,
        space: BigInt(data.length),
      });
      return ata;
    },
    airdrop(address, lamportsAmount) {
      svm.airdrop(address, lamports(lamportsAmount));
    },
    setConfirmation(signature, confirmation) {
      const tx = history.get(signature);
      if (!tx) throw new Error(`unknown signature ${signature}`);
      tx.confirmation = confirmation;
    },
    advanceBlocks(n) {
      slot += n;
      svm.expireBlockhash();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function rpcError(code: number, message: string, data?: unknown) {
  return Object.assign(new Error(message), {
    rpc: { code, message, ...(data === undefined ? {} : { data }) },
  });
}

function uiAmount(amount: bigint, decimals: number): string {
  if (decimals === 0) return amount.toString();
  const text = amount.toString().padStart(decimals + 1, "0");
  const whole = text.slice(0, -decimals);
  const frac = text.slice(-decimals).replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : whole;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
