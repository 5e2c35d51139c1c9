/**
 * Modem farmers' earnings (docs/adr/0017-modem-farmers.md). Gateways count what each production
 * modem exit serves into bytes:dev:{modem_...} and mark it in modems:unsettled (gateway-node/
 * modem-bytes.ts); this pass turns the growth past the exit's watermark (modem_exits.settled_bytes)
 * into earnings rows for the exit's farmer at the mobile-class rate, with the farmer's own override
 * (accounts.earnings_per_gb.mobile), and the same postings in the double-entry ledger. The crash
 * rules are the devices' (services/earnings.ts): the set member leaves only after the commit.
 */
import { type Pool, type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import { keys } from "../../../shared/keys.ts";
import { runScript } from "../../../shared/lua/script.ts";
import { deviceBytesPending, deviceBytesSettled } from "../../../shared/lua/scripts.gen.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";
import { accrue, mergeRates, rateMicro } from "./earnings.ts";
import { accrualPostings, postTransaction } from "./ledger.ts";
import { getSetting } from "./settings.ts";

interface Pending {
  exitId: string;
  up: string;
  down: string;
  since: string;
}

export interface ModemAccrual {
  exitId: string;
  accountId: string;
  bytes: bigint;
  rateMicroPerGb: bigint;
  amountMicro: bigint;
}

async function writeModemAccruals(tx: Queryable, pending: Pending[]): Promise<ModemAccrual[]> {
  const { rows } = await tx.query<{
    id: string;
    account_id: string | null;
    settled_bytes: string;
    settled_since: string;
    earnings_carry: string;
    override: unknown;
  }>(
    `SELECT m.id, m.account_id, m.settled_bytes, m.settled_since, m.earnings_carry,
            a.earnings_per_gb AS override
       FROM modem_exits m LEFT JOIN accounts a ON a.id = m.account_id
      WHERE m.id = ANY($1) FOR UPDATE OF m`,
    [pending.map((p) => p.exitId)],
  );
  if (rows.length === 0) return [];
  const base = await getSetting<Record<string, unknown>>(tx, "earnings_per_gb", {});
  const counters = new Map(
    pending.map((p) => [p.exitId, { total: BigInt(p.up) + BigInt(p.down), since: p.since }]),
  );
  const out: (ModemAccrual & { carry: bigint; total: bigint; since: string })[] = [];
  const moved: { id: string; total: bigint; since: string; carry: bigint }[] = [];
  for (const row of rows) {
    const c = counters.get(row.id)!;
    const device = {
      settledBytes: BigInt(row.settled_bytes),
      settledSince: row.settled_since,
      carry: BigInt(row.earnings_carry),
    };
    // A modem is mobile supply: the mobile-class rate, the farmer's override over the settings row.
    const rate = rateMicro(mergeRates(base, row.override), "mobile");
    const a = accrue(device, c, rate);
    if (!a) continue;
    if (row.account_id === null) {
      // The house's own modem earns no one anything; the watermark still moves, so a farmer it is
      // assigned to later is paid from then on, not for what it served before.
      moved.push({ id: row.id, total: c.total, since: c.since, carry: 0n });
      continue;
    }
    out.push({
      exitId: row.id,
      accountId: row.account_id,
      bytes: a.bytes,
      rateMicroPerGb: rate,
      amountMicro: a.amountMicro,
      carry: a.carry,
      total: c.total,
      since: c.since,
    });
    moved.push({ id: row.id, total: c.total, since: c.since, carry: a.carry });
  }
  if (moved.length > 0)
    await tx.query(
      `UPDATE modem_exits m SET settled_bytes = u.total, settled_since = u.since, earnings_carry = u.carry
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS u (id, total, since, carry)
        WHERE m.id = u.id`,
      [
        moved.map((m) => m.id),
        moved.map((m) => String(m.total)),
        moved.map((m) => m.since),
        moved.map((m) => String(m.carry)),
      ],
    );
  if (out.length === 0) return out;
  const col = (f: (a: (typeof out)[number]) => unknown) => out.map((a) => String(f(a)));
  await tx.query(
    `INSERT INTO earnings_ledger
       (account_id, modem_exit_id, ip_type, bytes, rate_micro_per_gb, amount_micro, settled_through)
     SELECT u.acct, u.exit, 'mobile', u.bytes, u.rate, u.amount, u.total
       FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
            AS u (acct, exit, bytes, rate, amount, total)`,
    [
      col((a) => a.accountId),
      col((a) => a.exitId),
      col((a) => a.bytes),
      col((a) => a.rateMicroPerGb),
      col((a) => a.amountMicro),
      col((a) => a.total),
    ],
  );
  const ledgerTxn = await postTransaction(tx, { kind: "accrual", ref: null, postings: accrualPostings(out) });
  await appendAudit(tx, {
    actor: "cron:supplier-earnings",
    action: "earnings.accrue_modem",
    subject: ledgerTxn,
    detail: { entries: out.length, amountMicro: String(out.reduce((s, a) => s + a.amountMicro, 0n)) },
  });
  return out;
}

/** One settlement pass over at most `maxExits` modem exits with unsettled traffic. */
export async function settleModemEarnings(
  deps: { redis: RedisClient; db: Pool },
  maxExits: number,
): Promise<{ exits: number; entries: number; bytes: string; amountMicro: string }> {
  const flat = ((await runScript(deps.redis, deviceBytesPending, [keys.unsettledModems()], [maxExits])) ??
    []) as unknown[];
  const pending: Pending[] = [];
  for (let i = 0; i + 4 < flat.length; i += 5)
    pending.push({
      exitId: String(flat[i]),
      up: String(flat[i + 1]),
      down: String(flat[i + 2]),
      since: String(flat[i + 3] ?? ""),
    });
  if (pending.length === 0) return { exits: 0, entries: 0, bytes: "0", amountMicro: "0" };
  const accruals = await withTransaction(deps.db, (tx) => writeModemAccruals(tx, pending));
  // After the commit (a crash before it leaves the exits in the set; their watermark says what is done).
  await runScript(
    deps.redis,
    deviceBytesSettled,
    [keys.unsettledModems()],
    pending.flatMap((p) => [p.exitId, p.up, p.down]),
  );
  return {
    exits: pending.length,
    entries: accruals.length,
    bytes: String(accruals.reduce((s, a) => s + a.bytes, 0n)),
    amountMicro: String(accruals.reduce((s, a) => s + a.amountMicro, 0n)),
  };
}
