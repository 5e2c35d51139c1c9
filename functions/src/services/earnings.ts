/**
 * Supplier earnings accrual (DESIGN.md "Settlement"). Relays count every byte a device serves into
 * cumulative Redis counters (bytes:dev:{id}) and mark the device unsettled; the cron turns the growth
 * past the device's Postgres watermark (devices.settled_bytes) into an append-only ledger row at the
 * live per-GB rate of the device's IP class, with the account's overrides. Integer micro-USDC only;
 * the remainder below one micro-USDC is carried per device, so rounding each row down loses nothing.
 *
 * Crash safety: the set membership is removed only after the ledger commit, and only if the
 * counters did not grow meanwhile; a rerun after a crash finds the watermark already moved and
 * accrues nothing twice. Payouts are not built yet: the accrued total is the pending balance.
 */
import type { IpClass } from "../../../shared/asn.ts";
import { type Pool, type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import { keys } from "../../../shared/keys.ts";
import { runScript } from "../../../shared/lua/script.ts";
import { deviceBytesPending, deviceBytesSettled } from "../../../shared/lua/scripts.gen.ts";
import { BYTES_PER_GB, parseUsdc } from "../../../shared/money.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";
import { accrualPostings, postTransaction } from "./ledger.ts";
import { getSetting } from "./settings.ts";

const IP_CLASSES: readonly IpClass[] = ["mobile", "residential", "datacenter"];

/** Decimal USDC per GB by IP class, as the register response shows them. */
export type Rates = Record<IpClass, string>;

export function mergeRates(base: Partial<Record<string, unknown>>, override: unknown): Rates {
  const out = {} as Rates;
  const o = (override && typeof override === "object" ? override : {}) as Record<string, unknown>;
  for (const cls of IP_CLASSES) {
    const v = typeof o[cls] === "string" ? o[cls] : base[cls];
    out[cls] = typeof v === "string" ? v : "0";
  }
  return out;
}

/** The live rates for an account: its own overrides (accounts.earnings_per_gb) over the settings row. */
export async function earningsPerGB(db: Queryable, accountId?: string): Promise<Rates> {
  const [base, acct] = await Promise.all([
    getSetting<Record<string, unknown>>(db, "earnings_per_gb", {}),
    accountId
      ? db.query<{ earnings_per_gb: unknown }>("SELECT earnings_per_gb FROM accounts WHERE id = $1", [
          accountId,
        ])
      : undefined,
  ]);
  return mergeRates(base, acct?.rows[0]?.earnings_per_gb);
}

export function rateMicro(rates: Rates, cls: IpClass): bigint {
  try {
    return parseUsdc(rates[cls]);
  } catch {
    throw new RangeError(
      `earnings rate for ${cls} is ${JSON.stringify(rates[cls])}: settings.earnings_per_gb and ` +
        'accounts.earnings_per_gb take decimal USDC per GB with at most 6 decimals, e.g. "0.5"',
    );
  }
}

export interface Accrual {
  deviceId: string;
  accountId: string;
  ipType: IpClass;
  bytes: bigint;
  rateMicroPerGb: bigint;
  amountMicro: bigint;
  carry: bigint;
  settledThrough: bigint;
  /** the `since` of the counters this row settled */
  since: string;
}

/**
 * What a device earns now that its counters (started at `since`) total `total` bytes: pure, so the
 * rounding and carry rules are tested on their own. Undefined when nothing new was served.
 */
export function accrue(
  device: { settledBytes: bigint; settledSince: string; carry: bigint },
  counters: { total: bigint; since: string },
  rateMicroPerGb: bigint,
): { bytes: bigint; amountMicro: bigint; carry: bigint } | undefined {
  // Counters with another start restarted from zero (Redis lost them): everything they hold is new.
  // With the same start they only grow, so a total at or below the watermark is a stale read (a
  // concurrent run settled past it) and must not be paid again.
  const bytes =
    counters.since !== device.settledSince
      ? counters.total
      : counters.total > device.settledBytes
        ? counters.total - device.settledBytes
        : 0n;
  if (bytes === 0n) return undefined;
  const owed = bytes * rateMicroPerGb + device.carry;
  return { bytes, amountMicro: owed / BYTES_PER_GB, carry: owed % BYTES_PER_GB };
}

interface Pending {
  deviceId: string;
  up: string;
  down: string;
  since: string;
  /** the class the relay saw the socket come from; "" when it could not tell */
  seenClass: string;
}

/** Writes the accruals for `pending` in one transaction; devices unknown to Postgres are skipped. */
async function writeAccruals(tx: Queryable, pending: Pending[]): Promise<Accrual[]> {
  const { rows } = await tx.query<{
    id: string;
    account_id: string;
    ip_type: IpClass;
    settled_bytes: string;
    settled_since: string;
    earnings_carry: string;
    override: unknown;
  }>(
    `SELECT d.id, d.account_id, d.ip_type, d.settled_bytes, d.settled_since, d.earnings_carry,
            a.earnings_per_gb AS override
       FROM devices d JOIN accounts a ON a.id = d.account_id
      WHERE d.id = ANY($1) FOR UPDATE OF d`,
    [pending.map((p) => p.deviceId)],
  );
  if (rows.length === 0) return [];
  const base = await getSetting<Record<string, unknown>>(tx, "earnings_per_gb", {});
  const counters = new Map(
    pending.map((p) => [
      p.deviceId,
      { total: BigInt(p.up) + BigInt(p.down), since: p.since, seenClass: p.seenClass },
    ]),
  );
  const out: Accrual[] = [];
  for (const row of rows) {
    const c = counters.get(row.id)!;
    // The class of the socket that served the bytes (the relay classified its address) beats the
    // class of whatever address called register (ADR 0011).
    const ipType = (IP_CLASSES as readonly string[]).includes(c.seenClass)
      ? (c.seenClass as IpClass)
      : row.ip_type;
    const rate = rateMicro(mergeRates(base, row.override), ipType);
    const device = {
      settledBytes: BigInt(row.settled_bytes),
      settledSince: row.settled_since,
      carry: BigInt(row.earnings_carry),
    };
    const a = accrue(device, c, rate);
    if (!a) continue;
    out.push({
      deviceId: row.id,
      accountId: row.account_id,
      ipType,
      rateMicroPerGb: rate,
      settledThrough: c.total,
      since: c.since,
      ...a,
    });
  }
  if (out.length === 0) return out;
  const col = <K extends keyof Accrual>(k: K) => out.map((a) => String(a[k]));
  await tx.query(
    `INSERT INTO earnings_ledger
       (account_id, device_id, ip_type, bytes, rate_micro_per_gb, amount_micro, settled_through)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])`,
    [
      col("accountId"),
      col("deviceId"),
      col("ipType"),
      col("bytes"),
      col("rateMicroPerGb"),
      col("amountMicro"),
      col("settledThrough"),
    ],
  );
  await tx.query(
    `UPDATE devices d SET settled_bytes = u.total, settled_since = u.since, earnings_carry = u.carry
       FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS u (id, total, since, carry)
      WHERE d.id = u.id`,
    [col("deviceId"), col("settledThrough"), col("since"), col("carry")],
  );
  // The same money in the double-entry ledger (ADR 0013), in the same database transaction.
  const ledgerTxn = await postTransaction(tx, { kind: "accrual", ref: null, postings: accrualPostings(out) });
  await appendAudit(tx, {
    actor: "cron:supplier-earnings",
    action: "earnings.accrue",
    subject: ledgerTxn,
    detail: { entries: out.length, amountMicro: String(out.reduce((sum, a) => sum + a.amountMicro, 0n)) },
  });
  return out;
}

/** One settlement pass over at most `maxDevices` unsettled devices. */
export async function settleEarnings(
  deps: { redis: RedisClient; db: Pool },
  maxDevices: number,
): Promise<{ devices: number; entries: number; bytes: string; amountMicro: string }> {
  const flat = ((await runScript(deps.redis, deviceBytesPending, [keys.unsettledDevices()], [maxDevices])) ??
    []) as unknown[];
  const pending: Pending[] = [];
  for (let i = 0; i + 4 < flat.length; i += 5)
    pending.push({
      deviceId: String(flat[i]),
      up: String(flat[i + 1]),
      down: String(flat[i + 2]),
      since: String(flat[i + 3] ?? ""),
      seenClass: String(flat[i + 4] ?? ""),
    });
  if (pending.length === 0) return { devices: 0, entries: 0, bytes: "0", amountMicro: "0" };
  const accruals = await withTransaction(deps.db, (tx) => writeAccruals(tx, pending));
  // After the commit: a crash before this line leaves the devices in the set, and the next run
  // finds their watermark already moved (no double accrual).
  await runScript(
    deps.redis,
    deviceBytesSettled,
    [keys.unsettledDevices()],
    pending.flatMap((p) => [p.deviceId, p.up, p.down]),
  );
  return {
    devices: pending.length,
    entries: accruals.length,
    bytes: String(accruals.reduce((s, a) => s + a.bytes, 0n)),
    amountMicro: String(accruals.reduce((s, a) => s + a.amountMicro, 0n)),
  };
}

export interface EarningsSummary {
  accruedMicro: bigint;
  bytes: bigint;
  deviceCount: number;
  devices: { deviceId: string; name: string; ipType: IpClass; bytes: bigint; accruedMicro: bigint }[];
  days: { date: string; bytes: bigint; accruedMicro: bigint }[];
  rates: Rates;
}

/** An account's accrued earnings: totals, the top `limit` devices, and `days` UTC days zero-filled. */
export async function earningsSummary(
  db: Queryable,
  accountId: string,
  opts: { now: Date; days: number; limit: number },
): Promise<EarningsSummary> {
  const today = opts.now.toISOString().slice(0, 10);
  const dayAt = (i: number) =>
    new Date(Date.parse(`${today}T00:00:00Z`) - i * 86_400_000).toISOString().slice(0, 10);
  const first = dayAt(opts.days - 1);
  const [totals, devices, days, rates] = await Promise.all([
    db.query<{ micro: string; bytes: string; devices: string }>(
      `SELECT coalesce(sum(amount_micro), 0)::text AS micro, coalesce(sum(bytes), 0)::text AS bytes,
              count(DISTINCT coalesce(device_id, modem_exit_id))::text AS devices
         FROM earnings_ledger WHERE account_id = $1`,
      [accountId],
    ),
    // A farmer's modem exits are listed like devices (ADR 0017): id modem_..., named host:port.
    db.query<{ device_id: string; name: string; ip_type: IpClass; bytes: string; micro: string }>(
      `SELECT coalesce(l.device_id, l.modem_exit_id) AS device_id,
              coalesce(d.name, 'modem ' || m.host || ':' || m.port) AS name,
              coalesce(d.ip_type, m.ip_type) AS ip_type,
              sum(l.bytes)::text AS bytes, sum(l.amount_micro)::text AS micro
         FROM earnings_ledger l
         LEFT JOIN devices d ON d.id = l.device_id
         LEFT JOIN modem_exits m ON m.id = l.modem_exit_id
        WHERE l.account_id = $1
        GROUP BY 1, 2, 3
        ORDER BY sum(l.amount_micro) DESC, sum(l.bytes) DESC, 1
        LIMIT $2`,
      [accountId, opts.limit],
    ),
    db.query<{ day: string; bytes: string; micro: string }>(
      `SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
              sum(bytes)::text AS bytes, sum(amount_micro)::text AS micro
         FROM earnings_ledger
        WHERE account_id = $1 AND created_at >= $2::date
        GROUP BY 1`,
      [accountId, first],
    ),
    earningsPerGB(db, accountId),
  ]);
  const byDay = new Map(days.rows.map((r) => [r.day, r]));
  const t = totals.rows[0]!;
  return {
    accruedMicro: BigInt(t.micro),
    bytes: BigInt(t.bytes),
    deviceCount: Number(t.devices),
    devices: devices.rows.map((r) => ({
      deviceId: r.device_id,
      name: r.name,
      ipType: r.ip_type,
      bytes: BigInt(r.bytes),
      accruedMicro: BigInt(r.micro),
    })),
    days: Array.from({ length: opts.days }, (_, k) => {
      const date = dayAt(opts.days - 1 - k);
      const r = byDay.get(date);
      return { date, bytes: BigInt(r?.bytes ?? 0), accruedMicro: BigInt(r?.micro ?? 0) };
    }),
    rates,
  };
}

/**
 * Sets (or with null clears) an account's per-GB rate overrides (accounts.earnings_per_gb): for a
 * farmer, `mobile` is what its modem exits earn (ADR 0017). Audited with the previous value; null
 * when there is no such account.
 */
export async function setEarningsOverride(
  db: Queryable,
  input: { accountId: string; overrides: Partial<Rates> | null; actor: string },
): Promise<{ overrides: Partial<Rates> | null; rates: Rates } | null> {
  const { rows } = await db.query<{ before: Partial<Rates> | null }>(
    `SELECT earnings_per_gb AS before FROM accounts WHERE id = $1 FOR NO KEY UPDATE`,
    [input.accountId],
  );
  if (rows.length === 0) return null;
  await db.query("UPDATE accounts SET earnings_per_gb = $2 WHERE id = $1", [
    input.accountId,
    input.overrides === null ? null : JSON.stringify(input.overrides),
  ]);
  await appendAudit(db, {
    actor: input.actor,
    action: "earnings.rates_override",
    subject: input.accountId,
    detail: { before: rows[0]!.before, after: input.overrides },
  });
  return { overrides: input.overrides, rates: await earningsPerGB(db, input.accountId) };
}
