/**
 * The wallet a supplier is paid to (docs/adr/0014-withdrawals-and-payouts.md). One per account; a
 * new address (or the first) is payable only after the cooling period, so a stolen `supply` key
 * cannot redirect a payout before the owner notices the audited change.
 */
import { type Address, isOffCurveAddress, isAddress as isSolanaAddress } from "@solana/kit";
import { getAddress, isAddress as isEvmAddress, zeroAddress } from "viem";
import type { Queryable } from "../../../shared/db/pool.ts";
import { appendAudit } from "./audit.ts";
import { getSetting } from "./settings.ts";

export type PayoutNetwork = "base" | "solana";

export const DEFAULT_COOLING_SECONDS = 7 * 24 * 3600;

export interface PayoutWallet {
  accountId: string;
  network: PayoutNetwork;
  address: string;
  payableFrom: Date;
  updatedAt: Date;
}

/** Why an address cannot receive payouts on `network`, or null when it can. */
export function walletAddressProblem(network: PayoutNetwork, address: string): string | null {
  if (network === "base") {
    if (!/^0x[0-9a-fA-F]{40}$/.test(address)) return "must be a 0x-prefixed 20-byte hex address";
    if (!isEvmAddress(address, { strict: false })) return "is not an EVM address";
    const checksummed = getAddress(address);
    // Only the EIP-55 spelling carries a checksum; a typo in an all-lowercase address would pay a stranger.
    if (checksummed !== address) return `must be the EIP-55 checksummed spelling (${checksummed})`;
    if (checksummed === zeroAddress) return "must not be the zero address";
    return null;
  }
  if (!isSolanaAddress(address)) return "must be a base58 Solana address of 32 bytes";
  // Program-derived (off-curve) addresses have no private key: USDC sent there is gone.
  if (isOffCurveAddress(address as Address))
    return "must be on the ed25519 curve (a wallet, not a program address)";
  return null;
}

function walletRow(r: {
  account_id: string;
  network: PayoutNetwork;
  address: string;
  payable_from: string | Date;
  updated_at: string | Date;
}): PayoutWallet {
  return {
    accountId: r.account_id,
    network: r.network,
    address: r.address,
    payableFrom: new Date(r.payable_from),
    updatedAt: new Date(r.updated_at),
  };
}

export async function getWallet(db: Queryable, accountId: string): Promise<PayoutWallet | null> {
  const { rows } = await db.query<Parameters<typeof walletRow>[0]>(
    "SELECT account_id, network, address, payable_from, updated_at FROM payout_wallets WHERE account_id = $1",
    [accountId],
  );
  return rows[0] ? walletRow(rows[0]) : null;
}

/**
 * Registers the account's payout wallet (validated by the caller). The same wallet again changes
 * nothing; any other starts the cooling period (settings.wallet_cooling_seconds). Audited.
 */
export async function setWallet(
  tx: Queryable,
  input: { accountId: string; actor: string; network: PayoutNetwork; address: string; now: Date },
): Promise<{ wallet: PayoutWallet; changed: boolean }> {
  // Lock the account: a wallet change and a withdrawal of the same account never interleave.
  await tx.query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE", [input.accountId]);
  const current = await getWallet(tx, input.accountId);
  if (current && current.network === input.network && current.address === input.address)
    return { wallet: current, changed: false };
  const cooling = Number(await getSetting(tx, "wallet_cooling_seconds", DEFAULT_COOLING_SECONDS));
  const payableFrom = new Date(input.now.getTime() + cooling * 1000);
  const { rows } = await tx.query<Parameters<typeof walletRow>[0]>(
    `INSERT INTO payout_wallets (account_id, network, address, payable_from, updated_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (account_id) DO UPDATE
       SET network = EXCLUDED.network, address = EXCLUDED.address, payable_from = EXCLUDED.payable_from,
           updated_at = EXCLUDED.updated_at
     RETURNING account_id, network, address, payable_from, updated_at`,
    [input.accountId, input.network, input.address, payableFrom.toISOString(), input.now.toISOString()],
  );
  await appendAudit(tx, {
    actor: input.actor,
    action: "wallet.set",
    subject: input.accountId,
    detail: {
      network: input.network,
      address: input.address,
      previous: current ? { network: current.network, address: current.address } : null,
      payableFrom: payableFrom.toISOString(),
    },
  });
  return { wallet: walletRow(rows[0]!), changed: true };
}
