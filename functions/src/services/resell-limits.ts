/**
 * What an account may resell (ADR 0010): a lifetime byte allowance that every pool-key mint and
 * topup draws from (nothing is given back, so deleting and re-minting keys cannot reset it), and
 * a ceiling on one key's maxConnections. Per-account columns override settings.resell_limits.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { getSetting } from "./settings.ts";

export interface ResellLimitSetting {
  allowanceBytes: number;
  maxConnections: number;
}

/** Used when the settings row is missing: 10 GB lifetime, 100 connections per key. */
export const DEFAULT_RESELL_LIMITS: ResellLimitSetting = {
  allowanceBytes: 10_000_000_000,
  maxConnections: 100,
};

export interface ResellLimits {
  allowanceBytes: bigint;
  resoldBytes: bigint;
  maxConnections: number;
}

export type LimitFailure = {
  ok: false;
  code: "E_RESELL_LIMIT";
  message: string;
  details: Record<string, string | number>;
};

/** The account's effective limits and what it has resold so far. */
export async function resellLimits(db: Queryable, accountId: string): Promise<ResellLimits> {
  const [global, acct] = await Promise.all([
    getSetting(db, "resell_limits", DEFAULT_RESELL_LIMITS),
    db.query<{ allowance: string | null; max_conns: number | null; resold: string }>(
      `SELECT resell_allowance_bytes::text AS allowance, resell_max_connections AS max_conns,
              resold_bytes::text AS resold FROM accounts WHERE id = $1`,
      [accountId],
    ),
  ]);
  const row = acct.rows[0];
  return {
    allowanceBytes: BigInt(row?.allowance ?? global.allowanceBytes),
    resoldBytes: BigInt(row?.resold ?? 0),
    maxConnections: row?.max_conns ?? global.maxConnections,
  };
}

/** Checks one key's maxConnections against the account's ceiling. */
export function checkMaxConnections(limits: ResellLimits, maxConnections: number): LimitFailure | null {
  if (maxConnections <= limits.maxConnections) return null;
  return {
    ok: false,
    code: "E_RESELL_LIMIT",
    message: `maxConnections ${maxConnections} is above this account's limit of ${limits.maxConnections} per key`,
    details: { limit: "maxConnections", maxConnections: limits.maxConnections },
  };
}

/**
 * Draws `bytes` from the account's allowance inside the caller's transaction; one conditional
 * UPDATE, so concurrent mints cannot both pass a check that only one of them fits.
 */
export async function drawResellBytes(
  tx: Queryable,
  accountId: string,
  bytes: number,
): Promise<{ ok: true } | LimitFailure> {
  const global = await getSetting(tx, "resell_limits", DEFAULT_RESELL_LIMITS);
  const res = await tx.query(
    `UPDATE accounts SET resold_bytes = resold_bytes + $2::bigint
      WHERE id = $1 AND resold_bytes + $2::bigint <= COALESCE(resell_allowance_bytes, $3::bigint)
      RETURNING resold_bytes`,
    [accountId, String(bytes), String(global.allowanceBytes)],
  );
  if ((res.rowCount ?? 0) > 0) return { ok: true };
  const limits = await resellLimits(tx, accountId);
  const left = limits.allowanceBytes - limits.resoldBytes;
  return {
    ok: false,
    code: "E_RESELL_LIMIT",
    message: `this account may resell ${limits.allowanceBytes} bytes in all and has ${left > 0n ? left : 0n} left; ${bytes} asked`,
    details: {
      limit: "allowanceBytes",
      allowanceBytes: String(limits.allowanceBytes),
      remainingBytes: String(left > 0n ? left : 0n),
    },
  };
}
