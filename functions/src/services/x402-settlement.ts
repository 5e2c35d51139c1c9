/**
 * EIP-3009 settlement, at most once across every isolate (docs/adr/0008-x402-paid-flow-and-replay.md).
 *
 * The authorization header is public as soon as our gas wallet broadcasts it (the calldata is the
 * whole header), so the header alone never proves who is asking. The first request to insert the
 * claim row (`x402_authorization_claims`, primary key = authorization key) owns the authorization
 * for its product; it receives an `x402s_` token, and only that token resumes a pending settlement.
 * The signed transaction is recorded in the claim before it is sent, under a row lock on the gas
 * wallet that also hands out its nonces, so a crash between send and record cannot happen and a
 * retry finds the recorded transaction instead of signing a new one.
 */
import {
  encodeFunctionData,
  type Hex,
  keccak256,
  TransactionNotFoundError,
  TransactionReceiptNotFoundError,
} from "viem";
import type { Pool, Queryable } from "../../../shared/db/pool.ts";
import { withTransaction } from "../../../shared/db/pool.ts";
import { hashSecret, timingSafeEqual } from "../../../shared/ids.ts";
import {
  authorizationUsedEvent,
  checkEip3009Authorization,
  type Eip3009Payment,
  eip3009Abi,
  transferWithAuthorizationArgs,
} from "../../../shared/x402/eip3009.ts";
import { BASE_USDC_EIP712 } from "../../../shared/x402/networks.ts";
import type { PaymentCheck } from "../../../shared/x402/result.ts";
import { shortError, verifyBaseTransfer } from "../../../shared/x402/verify-base.ts";
import type { BaseRail } from "./x402-config.ts";
import type { VerifiedPayment } from "./x402-payment.ts";

export type ClaimRow = {
  authorization_key: string;
  payer: string;
  product_key: string;
  resource: string;
  price_micro: string;
  token_hash: string;
  state: "claimed" | "broadcast" | "settled";
  gas_wallet: string | null;
  tx_nonce: string | null;
  tx_hash: string | null;
  raw_tx: string | null;
  updated_at: Date;
};

export type SettlementOutcome =
  /** Settled and verified: redeem `payment`; `token` is the owner's (the session token of a new mint). */
  | { kind: "settled"; payment: VerifiedPayment; token: string }
  /** Broadcast (or resumed) but not final yet: only the holder of `token` may resume. */
  | { kind: "pending"; token: string; txHash: string | null; reason: string; message: string }
  /** Another request owns this authorization (claimed for `productKey`); nothing was sent for this one. */
  | { kind: "taken"; sameProduct: boolean; authorizationKey: string }
  /** Nothing moved; `retryable` when the same header may settle later. */
  | { kind: "refused"; reason: string; message: string; retryable: boolean };

// A claim whose owner died before signing anything blocks its authorization this long at most.
const STALE_CLAIM_SECONDS = 120;
const RECEIPT_TIMEOUT_MS = 20_000;

type GasRail = BaseRail & { gasWallet: NonNullable<BaseRail["gasWallet"]> };

export interface SettleInput {
  db: Pool;
  base: GasRail;
  payment: Eip3009Payment;
  authorizationKey: string;
  productKey: string;
  resource: string;
  price: bigint;
  nowSeconds: number;
  /** X-Session-Token the caller sent, if any: it resumes a claim whose token it is. */
  callerToken: string | undefined;
  /** The token to record when this request claims the authorization anew. */
  ownerToken: string;
}

/** Whether an authorization is claimed here already (then it can only be resumed by its owner). */
export async function claimOf(db: Queryable, authorizationKey: string): Promise<ClaimRow | null> {
  const { rows } = await db.query<ClaimRow>(
    "SELECT * FROM x402_authorization_claims WHERE authorization_key = $1",
    [authorizationKey],
  );
  return rows[0] ?? null;
}

/** The claim whose settlement transaction is `txHash`, if that tx is one of ours. */
export async function claimOfTransaction(db: Queryable, txHash: string): Promise<ClaimRow | null> {
  const { rows } = await db.query<ClaimRow>("SELECT * FROM x402_authorization_claims WHERE tx_hash = $1", [
    txHash.toLowerCase(),
  ]);
  return rows[0] ?? null;
}

/** Claims (or resumes) the authorization, settles it once from the gas wallet, and verifies the transfer. */
export async function settleAuthorization(input: SettleInput): Promise<SettlementOutcome> {
  const { db } = input;
  const owned = await ownClaim(input);
  if (owned.kind !== "owner") return owned.outcome;
  const { claim, token } = owned;
  const pending = (txHash: string | null, reason: string, message: string): SettlementOutcome => ({
    kind: "pending",
    token,
    txHash,
    reason,
    message,
  });

  let txHash = claim.tx_hash as Hex | null;
  if (txHash) {
    const known = await reconcile(input, claim);
    if (known.kind === "resign") txHash = null;
    else if (known.kind === "outcome") return finish(known.check, known.txHash);
    else if (known.kind === "pending") return pending(txHash, known.reason, known.message);
  }
  if (!txHash) {
    const sent = await signAndBroadcast(input);
    if (!sent.ok) {
      if (sent.maybeSent) return pending(sent.txHash, "rpc_error", sent.message);
      if (await authorizationUsed(input)) {
        const earlier = await earlierSettlement(input);
        if (earlier) return finish(earlier.check, earlier.txHash);
      }
      await releaseClaim(db, input.authorizationKey);
      return { kind: "refused", reason: "settlement_failed", message: sent.message, retryable: false };
    }
    txHash = sent.txHash;
  }
  return finish(await awaitTransfer(input, txHash), txHash);

  async function finish(check: PaymentCheck, hash: Hex): Promise<SettlementOutcome> {
    if (check.ok) {
      await db.query(
        "UPDATE x402_authorization_claims SET state = 'settled', tx_hash = $2, updated_at = now() WHERE authorization_key = $1",
        [input.authorizationKey, hash.toLowerCase()],
      );
      return {
        kind: "settled",
        token,
        payment: {
          network: "base",
          txRef: hash.toLowerCase(),
          payer: check.from,
          amount: check.amount,
          // The header is public once broadcast: it proves nothing about who presents it.
          payerProven: false,
          authorizationKey: input.authorizationKey,
        },
      };
    }
    if (check.retryable) return pending(hash, check.code, check.message);
    if (check.code === "reverted" && (await authorizationUsed(input))) {
      const earlier = await earlierSettlement(input);
      if (earlier && earlier.txHash.toLowerCase() !== hash.toLowerCase())
        return finish(earlier.check, earlier.txHash);
    }
    if (check.code === "reverted") await releaseClaim(db, input.authorizationKey);
    return { kind: "refused", reason: check.code, message: check.message, retryable: false };
  }
}

type Owned =
  | { kind: "owner"; claim: ClaimRow; token: string }
  | { kind: "not_owner"; outcome: SettlementOutcome };

async function ownClaim(input: SettleInput): Promise<Owned> {
  const { db } = input;
  const existing = await claimOf(db, input.authorizationKey);
  if (existing) return resume(input, existing);

  // Before anything is recorded: a forged header naming someone's from+nonce must not block theirs.
  const check = await checkEip3009Authorization({
    payment: input.payment,
    usdc: input.base.usdc,
    domain: BASE_USDC_EIP712,
    chainId: input.base.chainId,
    payTo: input.base.payTo,
    price: input.price,
    now: input.nowSeconds,
  });
  if (!check.ok)
    return {
      kind: "not_owner",
      outcome: { kind: "refused", reason: check.code, message: check.message, retryable: false },
    };
  const { rows } = await db.query<ClaimRow>(
    `INSERT INTO x402_authorization_claims (authorization_key, payer, product_key, resource, price_micro, token_hash, state)
     VALUES ($1, $2, $3, $4, $5, $6, 'claimed')
     ON CONFLICT (authorization_key) DO NOTHING RETURNING *`,
    [
      input.authorizationKey,
      input.payment.authorization.from,
      input.productKey,
      input.resource,
      input.price.toString(),
      await hashSecret(input.ownerToken),
    ],
  );
  if (rows[0]) return { kind: "owner", claim: rows[0], token: input.ownerToken };
  // Lost the insert to a concurrent copy of the header.
  const winner = await claimOf(db, input.authorizationKey);
  return winner
    ? resume(input, winner)
    : {
        kind: "not_owner",
        outcome: { kind: "taken", sameProduct: false, authorizationKey: input.authorizationKey },
      };
}

async function resume(input: SettleInput, claim: ClaimRow): Promise<Owned> {
  const taken: Owned = {
    kind: "not_owner",
    outcome: {
      kind: "taken",
      sameProduct: claim.product_key === input.productKey,
      authorizationKey: input.authorizationKey,
    },
  };
  if (claim.product_key !== input.productKey) return taken;
  if (input.callerToken && timingSafeEqual(await hashSecret(input.callerToken), claim.token_hash))
    return { kind: "owner", claim, token: input.callerToken };
  // An owner that died before signing sent nothing, so the header is still private: let it go.
  const staleBefore = new Date(input.nowSeconds * 1000 - STALE_CLAIM_SECONDS * 1000);
  if (claim.state === "claimed" && new Date(claim.updated_at) < staleBefore) {
    const { rows } = await input.db.query<ClaimRow>(
      `UPDATE x402_authorization_claims SET token_hash = $2, updated_at = now()
        WHERE authorization_key = $1 AND state = 'claimed' AND updated_at = $3 RETURNING *`,
      [input.authorizationKey, await hashSecret(input.ownerToken), claim.updated_at],
    );
    if (rows[0]) return { kind: "owner", claim: rows[0], token: input.ownerToken };
  }
  return taken;
}

async function releaseClaim(db: Queryable, authorizationKey: string) {
  await db.query(
    "DELETE FROM x402_authorization_claims WHERE authorization_key = $1 AND state <> 'settled'",
    [authorizationKey],
  );
}

type Sent =
  | { ok: true; txHash: Hex }
  | { ok: false; maybeSent: boolean; txHash: Hex | null; message: string };

/**
 * Signs the settlement with the next nonce of the gas wallet under its Postgres row lock (held by
 * every isolate that sends from it), records the signed tx in the claim (committed before the
 * send), sends it, then advances the wallet's nonce and releases the lock.
 */
async function signAndBroadcast(input: SettleInput): Promise<Sent> {
  const { db, base } = input;
  const wallet = base.gasWallet;
  const address = wallet.account.address.toLowerCase();
  const data = encodeFunctionData({
    abi: eip3009Abi,
    functionName: "transferWithAuthorization",
    args: transferWithAuthorizationArgs(input.payment),
  });
  // Simulated first, outside the lock: an authorization the token refuses costs no nonce and no gas.
  try {
    await base.client.call({ account: wallet.account, to: base.usdc, data });
  } catch (err) {
    return {
      ok: false,
      maybeSent: false,
      txHash: null,
      message: `token refused the authorization: ${shortError(err)}`,
    };
  }
  let recorded: Hex | null = null;
  try {
    return await withTransaction(db, async (tx): Promise<Sent> => {
      await tx.query(
        "INSERT INTO x402_gas_wallets (address, next_nonce) VALUES ($1, 0) ON CONFLICT (address) DO NOTHING",
        [address],
      );
      const { rows } = await tx.query<{ next_nonce: string }>(
        "SELECT next_nonce FROM x402_gas_wallets WHERE address = $1 FOR UPDATE",
        [address],
      );
      // The owner may have two requests in flight (a retry with its token): the first to sign wins.
      const { rows: signed } = await tx.query<{ tx_hash: string | null }>(
        "SELECT tx_hash FROM x402_authorization_claims WHERE authorization_key = $1",
        [input.authorizationKey],
      );
      if (signed[0]?.tx_hash) return { ok: true, txHash: signed[0].tx_hash as Hex };
      // The chain's pending count covers sends by anything else; ours covers an RPC that lags.
      const pendingCount = await base.client.getTransactionCount({
        address: wallet.account.address,
        blockTag: "pending",
      });
      const nonce = Math.max(pendingCount, Number(rows[0]?.next_nonce ?? 0));
      const request = await wallet.prepareTransactionRequest({
        account: wallet.account,
        chain: wallet.chain,
        to: base.usdc,
        data,
        nonce,
      });
      const raw = await wallet.signTransaction(request as never);
      const txHash = keccak256(raw);
      // Own connection, committed now: from here on a crash is reconciled from this row, never re-signed.
      await db.query(
        `UPDATE x402_authorization_claims
            SET state = 'broadcast', gas_wallet = $2, tx_nonce = $3, tx_hash = $4, raw_tx = $5, updated_at = now()
          WHERE authorization_key = $1`,
        [input.authorizationKey, address, nonce, txHash, raw],
      );
      recorded = txHash;
      await base.client.sendRawTransaction({ serializedTransaction: raw });
      await tx.query("UPDATE x402_gas_wallets SET next_nonce = $2, updated_at = now() WHERE address = $1", [
        address,
        nonce + 1,
      ]);
      return { ok: true, txHash };
    });
  } catch (err) {
    return {
      ok: false,
      maybeSent: recorded !== null,
      txHash: recorded,
      message: `could not submit the authorization: ${shortError(err)}`,
    };
  }
}

type Reconciled =
  | { kind: "outcome"; check: PaymentCheck; txHash: Hex }
  | { kind: "pending"; reason: string; message: string }
  | { kind: "resign" };

/** What became of a recorded settlement tx: mined, in the mempool, re-sent as recorded, or dead. */
async function reconcile(input: SettleInput, claim: ClaimRow): Promise<Reconciled> {
  const { base } = input;
  const hash = claim.tx_hash as Hex;
  try {
    await base.client.getTransactionReceipt({ hash });
    return { kind: "outcome", check: await awaitTransfer(input, hash), txHash: hash };
  } catch (err) {
    if (!(err instanceof TransactionReceiptNotFoundError))
      return { kind: "pending", reason: "rpc_error", message: `Base RPC failed: ${shortError(err)}` };
  }
  try {
    await base.client.getTransaction({ hash });
    return { kind: "outcome", check: await awaitTransfer(input, hash), txHash: hash };
  } catch (err) {
    if (!(err instanceof TransactionNotFoundError))
      return { kind: "pending", reason: "rpc_error", message: `Base RPC failed: ${shortError(err)}` };
  }
  // Unknown to the chain: the send never arrived (or was dropped). Settled some other way?
  if (await authorizationUsed(input)) {
    const earlier = await earlierSettlement(input);
    if (earlier) return { kind: "outcome", ...earlier };
  }
  if (claim.raw_tx) {
    try {
      await base.client.sendRawTransaction({ serializedTransaction: claim.raw_tx as Hex });
      return { kind: "outcome", check: await awaitTransfer(input, hash), txHash: hash };
    } catch (err) {
      // Its nonce went to another tx: this one can never land, and the authorization is unused.
      if (!/nonce too low|nonce has already been used|nonce is too low/i.test(shortError(err)))
        return { kind: "pending", reason: "rpc_error", message: `could not re-send: ${shortError(err)}` };
    }
  }
  await input.db.query(
    `UPDATE x402_authorization_claims SET state = 'claimed', tx_hash = NULL, raw_tx = NULL, tx_nonce = NULL,
            updated_at = now() WHERE authorization_key = $1 AND tx_hash = $2`,
    [input.authorizationKey, hash],
  );
  return { kind: "resign" };
}

async function awaitTransfer(input: SettleInput, txHash: Hex): Promise<PaymentCheck> {
  const { base } = input;
  try {
    await base.client.waitForTransactionReceipt({
      hash: txHash,
      confirmations: base.confirmations,
      timeout: RECEIPT_TIMEOUT_MS,
    });
  } catch {
    // Not fatal: verification says pending / insufficient_confirmations and the owner resumes.
  }
  return verifyBaseTransfer({
    client: base.client,
    txHash,
    usdc: base.usdc,
    payTo: base.payTo,
    expectedChainId: base.chainId,
    price: input.price,
    confirmations: base.confirmations,
  });
}

function authorizationUsed(input: SettleInput): Promise<boolean> {
  const { from, nonce } = input.payment.authorization;
  return input.base.client
    .readContract({
      address: input.base.usdc,
      abi: eip3009Abi,
      functionName: "authorizationState",
      args: [from, nonce],
    })
    .catch(() => false);
}

// ~2.8 h of Base blocks: far beyond the 402's maxTimeoutSeconds, within common eth_getLogs limits.
const SETTLED_LOOKBACK_BLOCKS = 5_000n;

/** The transaction that used this authorization (ours under another hash, or anyone's). */
async function earlierSettlement(input: SettleInput): Promise<{ check: PaymentCheck; txHash: Hex } | null> {
  const { from, nonce } = input.payment.authorization;
  const client = input.base.client;
  let txHash: Hex | undefined;
  try {
    const head = await client.getBlockNumber({ cacheTime: 0 });
    const logs = await client.getLogs({
      address: input.base.usdc,
      event: authorizationUsedEvent,
      args: { authorizer: from, nonce },
      fromBlock: head > SETTLED_LOOKBACK_BLOCKS ? head - SETTLED_LOOKBACK_BLOCKS : 0n,
      toBlock: head,
    });
    txHash = logs[0]?.transactionHash ?? undefined;
  } catch {
    return null; // the RPC failed: the caller answers as if nothing settled yet (retryable)
  }
  if (!txHash) return null;
  return { check: await awaitTransfer(input, txHash), txHash };
}
