// Test helpers that play the paying agent on the litesvm endpoint: real SPL Token transfers built,
// signed and sent with @solana/kit over JSON-RPC, exactly as a wallet would.

import {
  type Address,
  appendTransactionMessageInstruction,
  createSolanaRpc,
  createTransactionMessage,
  getBase64EncodedWireTransaction,
  getSignatureFromTransaction,
  type KeyPairSigner,
  pipe,
  setTransactionMessageFeePayerSigner,
  setTransactionMessageLifetimeUsingBlockhash,
  signTransactionMessageWithSigners,
} from "@solana/kit";
import { getTransferCheckedInstruction } from "@solana-program/token";

export interface SplTransfer {
  rpcUrl: string;
  payer: KeyPairSigner;
  mint: Address;
  source: Address;
  destination: Address;
  amount: bigint;
  decimals?: number;
  /** Lets a failing transfer land on-chain (as a failed tx) instead of being refused by preflight. */
  skipPreflight?: boolean;
}

/** Sends one transferChecked and returns its signature. */
export async function sendSplTransfer(t: SplTransfer): Promise<string> {
  const rpc = createSolanaRpc(t.rpcUrl);
  const { value: blockhash } = await rpc.getLatestBlockhash().send();
  const message = pipe(
    createTransactionMessage({ version: 0 }),
    (m) => setTransactionMessageFeePayerSigner(t.payer, m),
    (m) => setTransactionMessageLifetimeUsingBlockhash(blockhash, m),
    (m) =>
      appendTransactionMessageInstruction(
        getTransferCheckedInstruction({
          source: t.source,
          mint: t.mint,
          destination: t.destination,
          authority: t.payer,
          amount: t.amount,
          decimals: t.decimals ?? 6,
        }),
        m,
      ),
  );
  const tx = await signTransactionMessageWithSigners(message);
  await rpc
    .sendTransaction(getBase64EncodedWireTransaction(tx), {
      encoding: "base64",
      skipPreflight: t.skipPreflight ?? false,
    })
    .send();
  return getSignatureFromTransaction(tx);
}
