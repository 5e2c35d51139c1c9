/**
 * What the x402 test files share: a house account to mint under and everything it bought cleaned
 * up, the pool stock a purchase needs, and funded payers on the local anvil chain.
 */
import { type Account, type Address, type Hex, parseAbi } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import type { EvmChain } from "../../dev/chains/evm.ts";
import { createAccountWithKey } from "../../shared/accounts.ts";
import type { Queryable } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import type { RedisClient } from "../../shared/redis.ts";

const erc20 = parseAbi(["function transfer(address to, uint256 value) returns (bool)"]);

/**
 * Puts country `us` of pool mbl in stock. The rollup is global and rebuilt whole by any test that
 * runs the cron, so a file calls this before each purchase request.
 */
export async function stockUs(db: Queryable) {
  await db.query(
    `INSERT INTO pool_rollup (pool, country, registered, online, verified, listed, tier_fast, tier_medium, tier_slow, tier_unknown, computed_at)
     VALUES ('mbl', 'us', 3, 3, 3, 3, 3, 0, 0, 0, now())
     ON CONFLICT (pool, country) DO UPDATE SET listed = GREATEST(pool_rollup.listed, 3)`,
  );
}

/** A house account of the file's own (X402_HOUSE_ACCOUNT_ID): purchases mint under it. */
export async function createHouseAccount(db: Queryable, name: string): Promise<string> {
  return (await createAccountWithKey(db, { name, kind: "house" })).accountId;
}

/**
 * Deletes what was bought under the house account: its credentials with their Redis mirror, their
 * sessions and payments, and any payment by `payers` (refused purchases still record some).
 */
export async function deletePurchases(
  db: Queryable,
  redis: Pick<RedisClient, "del">,
  houseAccountId: string,
  payers: string[] = [],
) {
  const { rows } = await db.query<{ id: string; secret_hash: string }>(
    "SELECT id, secret_hash FROM credentials WHERE account_id = $1",
    [houseAccountId],
  );
  const redisKeys = rows.flatMap((r) => [
    keys.credential(r.id),
    keys.credentialUsed(r.id),
    keys.credentialSecret(r.secret_hash),
  ]);
  if (redisKeys.length) await redis.del(...redisKeys);
  const ids = rows.map((r) => r.id);
  await db.query("DELETE FROM x402_payments WHERE credential_id = ANY($1) OR payer = ANY($2)", [ids, payers]);
  // EIP-3009 claims name the authorization's `from` as the header spelled it.
  await db.query("DELETE FROM x402_authorization_claims WHERE lower(payer) = ANY($1)", [
    payers.map((p) => p.toLowerCase()),
  ]);
  await db.query("DELETE FROM x402_sessions WHERE credential_id = ANY($1)", [ids]);
  await db.query("DELETE FROM credentials WHERE account_id = $1", [houseAccountId]);
}

/** Deletes an account and its API keys. */
export async function deleteAccount(db: Queryable, accountId: string) {
  await db.query("DELETE FROM api_keys WHERE account_id = $1", [accountId]);
  await db.query("DELETE FROM accounts WHERE id = $1", [accountId]);
}

/** The API vars for purchases paid on `chain` (one confirmation), minted under the house account. */
export function baseRailVars(chain: EvmChain, houseAccountId: string): Record<string, string> {
  return {
    X402_BASE_RPC_URL: chain.rpcUrl,
    X402_BASE_PAY_TO: chain.payTo.address,
    X402_CONFIRMATIONS: "1",
    X402_HOUSE_ACCOUNT_ID: houseAccountId,
  };
}

/** A fresh gas wallet with ETH, for X402_GAS_WALLET_KEY: the API settles EIP-3009 authorizations with it. */
export async function fundedGasKey(chain: EvmChain): Promise<Hex> {
  const gasKey = generatePrivateKey();
  await chain.testClient.setBalance({ address: privateKeyToAccount(gasKey).address, value: 10n ** 20n });
  return gasKey;
}

/** Forgets a test gas wallet's nonce row (x402_gas_wallets), for afterAll. */
export async function deleteGasWallet(db: Queryable, gasKey: Hex) {
  await db.query("DELETE FROM x402_gas_wallets WHERE address = $1", [
    privateKeyToAccount(gasKey).address.toLowerCase(),
  ]);
}

/** A fresh wallet with ETH and `usdc` micro-USDC, its address added to `payers` for cleanup. */
export async function newPayer(
  chain: EvmChain,
  payers: string[],
  usdc = 100_000_000n,
): Promise<PrivateKeyAccount> {
  const account = await chain.newFundedAccount(usdc);
  payers.push(account.address);
  return account;
}

/** Pays `amount` micro-USDC to the pinned recipient (or `opts.to`) and, unless told not to, waits for it. */
export async function transferUsdc(
  chain: EvmChain,
  from: Account,
  amount: bigint,
  opts: { to?: Address; token?: Address; wait?: boolean; gas?: bigint } = {},
): Promise<Hex> {
  const hash = await chain.walletFor(from).writeContract({
    address: opts.token ?? chain.usdc,
    abi: erc20,
    functionName: "transfer",
    args: [opts.to ?? chain.payTo.address, amount],
    ...(opts.gas ? { gas: opts.gas } : {}),
  });
  if (opts.wait !== false) await chain.publicClient.waitForTransactionReceipt({ hash });
  return hash;
}

/**
 * Deletes what `payers` bought, whichever house minted it: for files sharing the x402 fixture's
 * house account, whose other purchases belong to other files.
 */
export async function deletePurchasesBy(db: Queryable, redis: Pick<RedisClient, "del">, payers: string[]) {
  const lower = payers.map((p) => p.toLowerCase());
  const { rows } = await db.query<{ id: string; secret_hash: string }>(
    `SELECT id, secret_hash FROM credentials WHERE id IN
       (SELECT credential_id FROM x402_payments WHERE lower(payer) = ANY($1) AND credential_id IS NOT NULL)`,
    [lower],
  );
  const redisKeys = rows.flatMap((r) => [
    keys.credential(r.id),
    keys.credentialUsed(r.id),
    keys.credentialSecret(r.secret_hash),
  ]);
  if (redisKeys.length) await redis.del(...redisKeys);
  const ids = rows.map((r) => r.id);
  await db.query("DELETE FROM x402_payments WHERE credential_id = ANY($1) OR lower(payer) = ANY($2)", [
    ids,
    lower,
  ]);
  await db.query("DELETE FROM x402_authorization_claims WHERE lower(payer) = ANY($1)", [lower]);
  await db.query("DELETE FROM x402_sessions WHERE credential_id = ANY($1)", [ids]);
  await db.query("DELETE FROM credentials WHERE id = ANY($1)", [ids]);
}
