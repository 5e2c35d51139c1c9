// Verifies a USDC payment on Base from its tx hash, in code we own: chain pinned, asset contract
// pinned, recipient pinned, amounts summed as bigint, confirmations counted from a fresh head.
import {
  type Address,
  BaseError,
  erc20Abi,
  type Hash,
  isAddressEqual,
  isHash,
  type PublicClient,
  parseEventLogs,
  TransactionNotFoundError,
  TransactionReceiptNotFoundError,
} from "viem";
import { coversPrice } from "./quote.ts";
import { type PaymentCheck, refused } from "./result.ts";

/** The reads this module needs; tests pass a real viem client against anvil. */
export type BaseChainReader = Pick<
  PublicClient,
  "getChainId" | "getTransactionReceipt" | "getTransaction" | "getBlockNumber"
>;

export interface VerifyBaseTransferInput {
  client: BaseChainReader;
  txHash: string;
  /** The pinned USDC contract; Transfer logs from any other contract are ignored. */
  usdc: Address;
  /** The pinned recipient. */
  payTo: Address;
  expectedChainId: number;
  /** Quoted price in micro-USDC; the payment covers it if paid*100 >= price*98. */
  price: bigint;
  /** Blocks including the tx's own block (1 = mined). */
  confirmations: number;
}

/** Checks one tx hash against the pinned chain, asset, recipient and price. */
export async function verifyBaseTransfer(input: VerifyBaseTransferInput): Promise<PaymentCheck> {
  const { client, usdc, payTo } = input;
  if (!isHash(input.txHash)) return refused("not_found", "not a 32-byte hex transaction hash");
  const hash = input.txHash.toLowerCase() as Hash;
  try {
    const chainId = await client.getChainId();
    if (chainId !== input.expectedChainId)
      return refused(
        "wrong_chain",
        `RPC serves chain ${chainId}, payments are accepted on ${input.expectedChainId}`,
      );

    let receipt: Awaited<ReturnType<BaseChainReader["getTransactionReceipt"]>>;
    try {
      receipt = await client.getTransactionReceipt({ hash });
    } catch (err) {
      if (!(err instanceof TransactionReceiptNotFoundError)) throw err;
      // No receipt: either in the mempool (pending) or unknown to this node.
      try {
        await client.getTransaction({ hash });
        return refused("pending", "transaction is not mined yet; retry with the same hash");
      } catch (inner) {
        if (inner instanceof TransactionNotFoundError)
          return refused("not_found", "transaction not found on Base; if just sent, retry shortly");
        throw inner;
      }
    }
    if (receipt.status !== "success") return refused("reverted", "transaction reverted on-chain");

    const usdcTransfers = parseEventLogs({ abi: erc20Abi, eventName: "Transfer", logs: receipt.logs }).filter(
      (log) => isAddressEqual(log.address, usdc),
    );
    if (usdcTransfers.length === 0)
      return refused(
        "no_usdc_transfer",
        `no Transfer of the pinned USDC contract ${usdc} in this transaction`,
      );
    const toUs = usdcTransfers.filter((log) => isAddressEqual(log.args.to, payTo));
    if (toUs.length === 0)
      return refused("wrong_recipient", `no USDC transfer to the pinned recipient ${payTo}`);

    const paid = toUs.reduce((sum, log) => sum + log.args.value, 0n);
    if (!coversPrice(paid, input.price))
      return refused("underpaid", `paid ${paid} micro-USDC, price is ${input.price}`, {
        paid,
        required: input.price,
      });

    // Counted last: a refusal above is final, while this one resolves by itself.
    // cacheTime 0: viem caches the head for 4 s, which would undercount confirmations.
    const head = await client.getBlockNumber({ cacheTime: 0 });
    const confirmations = head - receipt.blockNumber + 1n;
    if (confirmations < BigInt(input.confirmations))
      return refused(
        "insufficient_confirmations",
        `${confirmations} of ${input.confirmations} confirmations; retry shortly`,
        { confirmations },
      );

    return { ok: true, code: "ok", amount: paid, from: toUs[0]!.args.from, blockNumber: receipt.blockNumber };
  } catch (err) {
    return refused("rpc_error", `Base RPC failed: ${shortError(err)}`);
  }
}

/** viem's short message only: its long form lists the RPC URL, which may embed an API key. */
export function shortError(err: unknown): string {
  if (err instanceof BaseError) return err.shortMessage;
  if (err instanceof Error) return err.message.split("\n")[0] ?? "";
  return "unknown error";
}
