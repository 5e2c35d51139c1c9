import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { runScript } from "../../shared/lua/script.ts";
import { deviceBytesFlush, deviceBytesPending, deviceBytesSettled } from "../../shared/lua/scripts.gen.ts";
import { BYTES_PER_GB } from "../../shared/money.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { earningsJob } from "../src/jobs/earnings.ts";
import { runScheduled } from "../src/scheduled.ts";
import { accrue } from "../src/services/earnings.ts";
import { createTenant } from "./helpers/tenant.ts";

// Supplier earnings inside workerd: the relay's real flush script writes the counters, the real
// cron job settles them into this run's Postgres. Ledger rows are append-only, so the accounts made
// here stay (the database is thrown away with the run).
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
afterAll(() => pool.end());

const GB = BYTES_PER_GB;

/** A supplier account with devices of the given classes, straight in Postgres. */
async function supplier(classes: ("mobile" | "residential" | "datacenter")[]) {
  const t = await createTenant(pool, redis, { kind: "supplier" });
  const devices: string[] = [];
  for (const [i, cls] of classes.entries()) {
    const id = `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    await pool.query("INSERT INTO devices (id, account_id, name, ip_type) VALUES ($1, $2, $3, $4)", [
      id,
      t.accountId,
      `box-${i}`,
      cls,
    ]);
    devices.push(id);
  }
  return { ...t, devices };
}

/** What a relay does every few seconds for a device that served traffic. */
const flush = (deviceId: string, up: bigint, down: bigint) =>
  runScript(
    redis,
    deviceBytesFlush,
    [keys.deviceBytes(deviceId), keys.servedDevices(), keys.unsettledDevices()],
    [String(up), String(down), deviceId, String(Date.now())],
  );

async function ledger(deviceId: string) {
  const { rows } = await pool.query<{ bytes: string; amount_micro: string; rate_micro_per_gb: string }>(
    "SELECT bytes, amount_micro, rate_micro_per_gb FROM earnings_ledger WHERE device_id = $1 ORDER BY id",
    [deviceId],
  );
  return rows.map((r) => ({ bytes: r.bytes, amount: r.amount_micro, rate: r.rate_micro_per_gb }));
}

const isUnsettled = async (id: string) =>
  Number(
    await redis.eval("return redis.call('SISMEMBER', KEYS[1], ARGV[1])", [keys.unsettledDevices()], [id]),
  ) === 1;

const earnings = (apiKey: string | undefined, query = "") =>
  SELF.fetch(`http://api.test/v1/peer/earnings${query}`, { headers: apiKey ? { "X-API-Key": apiKey } : {} });

describe("accrual arithmetic", () => {
  it("carries the remainder below one micro-USDC, so many small accruals sum to exactly one big one", () => {
    const rate = 500_000n; // 0.5 USDC per GB
    let state = { settledBytes: 0n, settledSince: "", carry: 0n };
    let paid = 0n;
    let total = 0n;
    // Deterministic uneven steps, many far below the 2,000 bytes one micro-USDC buys at this rate.
    for (let i = 1; i <= 2000; i++) {
      total += BigInt((i * 7919) % 3001);
      const a = accrue(state, { total, since: "t0" }, rate);
      if (!a) continue;
      paid += a.amountMicro;
      state = { settledBytes: total, settledSince: "t0", carry: a.carry };
    }
    expect(paid).toBe((total * rate) / GB);
    expect(state.carry).toBe((total * rate) % GB);
    expect(paid).toBeGreaterThan(0n);
  });

  it("nothing new is nothing, a stale read below the watermark is nothing, restarted counters count from zero", () => {
    const device = { settledBytes: 5n * GB, settledSince: "t0", carry: 0n };
    expect(accrue(device, { total: 5n * GB, since: "t0" }, 500_000n)).toBeUndefined();
    // Same counters read before a concurrent run settled past them: never paid twice.
    expect(accrue(device, { total: 2n * GB, since: "t0" }, 500_000n)).toBeUndefined();
    // Counters that started again (Redis lost them): all they hold is new.
    expect(accrue(device, { total: 2n * GB, since: "t1" }, 500_000n)).toEqual({
      bytes: 2n * GB,
      amountMicro: 1_000_000n,
      carry: 0n,
    });
  });
});

describe("supplier earnings cron", () => {
  it("accrues each device at its class rate, exactly once, and the API reports it", async () => {
    const s = await supplier(["mobile", "datacenter"]);
    const [mobile, dc] = s.devices as [string, string];
    // Settings rates (migration 0002): mobile 0.50, datacenter 0.10 USDC per GB.
    await flush(mobile, 2n * GB, 1n * GB);
    await flush(dc, 1_234_567n, 0n);
    expect(await isUnsettled(mobile)).toBe(true);

    const [out] = await runScheduled(e, [earningsJob]);
    expect(out!.status).toBe("ok");
    expect(await ledger(mobile)).toEqual([{ bytes: String(3n * GB), amount: "1500000", rate: "500000" }]);
    // 1,234,567 B x 100,000 micro/GB = 123.4567 micro: 123 now, the rest carried.
    expect(await ledger(dc)).toEqual([{ bytes: "1234567", amount: "123", rate: "100000" }]);
    expect(await isUnsettled(mobile)).toBe(false);
    expect(await isUnsettled(dc)).toBe(false);

    // A second run with no new traffic writes nothing; new traffic accrues only the growth.
    await runScheduled(e, [earningsJob]);
    expect(await ledger(mobile)).toHaveLength(1);
    await flush(dc, 765_433n, 0n);
    await runScheduled(e, [earningsJob]);
    // 2,000,000 B in all = exactly 200 micro: the carried 0.4567 made the second row 77, not 76.
    expect((await ledger(dc)).map((r) => r.amount)).toEqual(["123", "77"]);

    const res = await earnings(s.apiKey, "?days=7");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const body = (await res.json()) as {
      accruedMicro: string;
      accrued: string;
      pendingMicro: string;
      bytes: string;
      deviceCount: number;
      rates: Record<string, string>;
      devices: { deviceId: string; accruedMicro: string; ipType: string }[];
      days: { date: string; accruedMicro: string }[];
    };
    expect(body.accruedMicro).toBe("1500200");
    expect(body.accrued).toBe("1.5002");
    expect(body.pendingMicro).toBe("1500200");
    expect(body.bytes).toBe(String(3n * GB + 2_000_000n));
    expect(body.deviceCount).toBe(2);
    expect(body.rates).toMatchObject({ mobile: "0.50", datacenter: "0.10" });
    expect(body.devices.map((d) => [d.deviceId, d.ipType, d.accruedMicro])).toEqual([
      [mobile, "mobile", "1500000"],
      [dc, "datacenter", "200"],
    ]);
    expect(body.days).toHaveLength(7);
    expect(body.days.at(-1)).toEqual({
      date: new Date().toISOString().slice(0, 10),
      bytes: body.bytes,
      accruedMicro: "1500200",
    });
  });

  it("bytes accrue at the class the relay saw the serving socket come from, not the class register recorded (ADR 0011)", async () => {
    const s = await supplier(["mobile"]);
    const [id] = s.devices as [string];
    // The relay classified the socket's address as a datacenter (relay-node/access.test.ts).
    await redis.hset(keys.deviceBytes(id), { class: "datacenter" });
    await flush(id, 1n * GB, 0n);
    await runScheduled(e, [earningsJob]);
    expect(await ledger(id)).toEqual([{ bytes: String(GB), amount: "100000", rate: "100000" }]);
    const { rows } = await pool.query<{ ip_type: string }>(
      "SELECT ip_type FROM earnings_ledger WHERE device_id = $1",
      [id],
    );
    expect(rows.map((r) => r.ip_type)).toEqual(["datacenter"]);
  });

  it("an account's rate override applies to bytes served after it; earlier rows keep their rate", async () => {
    const s = await supplier(["mobile"]);
    const [id] = s.devices as [string];
    await flush(id, 1n * GB, 0n);
    await runScheduled(e, [earningsJob]);
    await pool.query(`UPDATE accounts SET earnings_per_gb = '{"mobile": "0.8"}' WHERE id = $1`, [
      s.accountId,
    ]);
    await flush(id, 0n, 1n * GB);
    await runScheduled(e, [earningsJob]);
    expect(await ledger(id)).toEqual([
      { bytes: String(GB), amount: "500000", rate: "500000" },
      { bytes: String(GB), amount: "800000", rate: "800000" },
    ]);
    const body = (await (await earnings(s.apiKey)).json()) as { rates: Record<string, string> };
    expect(body.rates.mobile).toBe("0.8");
  });

  it("a bad rate fails the run naming it and loses nothing: fixed, the next run accrues it all", async () => {
    const s = await supplier(["residential"]);
    const [id] = s.devices as [string];
    await pool.query(`UPDATE accounts SET earnings_per_gb = '{"residential": "0.3 USD"}' WHERE id = $1`, [
      s.accountId,
    ]);
    await flush(id, 3n * GB, 0n);
    const [failed] = await runScheduled(e, [earningsJob]);
    expect(failed!.status).toBe("failed");
    expect(JSON.stringify(failed!.detail)).toContain('earnings rate for residential is \\"0.3 USD\\"');
    expect(await ledger(id)).toEqual([]);
    expect(await isUnsettled(id)).toBe(true);
    const { rows } = await pool.query<{ settled_bytes: string }>(
      "SELECT settled_bytes FROM devices WHERE id = $1",
      [id],
    );
    expect(rows[0]!.settled_bytes).toBe("0");

    await pool.query(`UPDATE accounts SET earnings_per_gb = '{"residential": "0.3"}' WHERE id = $1`, [
      s.accountId,
    ]);
    await runScheduled(e, [earningsJob]);
    expect(await ledger(id)).toEqual([{ bytes: String(3n * GB), amount: "900000", rate: "300000" }]);
  });

  it("a device that served more while it was being settled stays unsettled for the next run", async () => {
    const s = await supplier(["mobile"]);
    const [id] = s.devices as [string];
    await flush(id, 1000n, 0n);
    // Read as the cron does, then the relay flushes again before the cron marks it settled.
    const read = (await runScript(
      redis,
      deviceBytesPending,
      [keys.unsettledDevices()],
      [100000],
    )) as unknown[];
    const at = read.findIndex((v) => String(v) === id);
    expect(read.slice(at, at + 3).map(String)).toEqual([id, "1000", "0"]);
    expect(Number(read[at + 3])).toBeGreaterThan(0); // since: when the counters started
    await flush(id, 500n, 0n);
    expect(await runScript(redis, deviceBytesSettled, [keys.unsettledDevices()], [id, "1000", "0"])).toBe(0);
    expect(await isUnsettled(id)).toBe(true);
    expect(await runScript(redis, deviceBytesSettled, [keys.unsettledDevices()], [id, "1500", "0"])).toBe(1);
    expect(await isUnsettled(id)).toBe(false);
  });

  it("overlapping cron runs between relay flushes pay every byte exactly once", async () => {
    const s = await supplier(["mobile"]);
    const [id] = s.devices as [string];
    for (let i = 0; i < 6; i++) {
      await flush(id, 250_000_000n, 250_000_000n);
      await Promise.all([
        runScheduled(e, [earningsJob]),
        runScheduled(e, [earningsJob]),
        runScheduled(e, [earningsJob]),
      ]);
    }
    const rows = await ledger(id);
    expect(rows.reduce((sum, r) => sum + BigInt(r.bytes), 0n)).toBe(3n * GB);
    expect(rows.reduce((sum, r) => sum + BigInt(r.amount), 0n)).toBe(1_500_000n);
  });

  it("the ledger is append-only", async () => {
    const s = await supplier(["mobile"]);
    const [id] = s.devices as [string];
    await flush(id, GB, 0n);
    await runScheduled(e, [earningsJob]);
    await expect(
      pool.query("UPDATE earnings_ledger SET amount_micro = 0 WHERE device_id = $1", [id]),
    ).rejects.toThrow(/append-only/);
    await expect(pool.query("DELETE FROM earnings_ledger WHERE device_id = $1", [id])).rejects.toThrow(
      /append-only/,
    );
  });

  it("answers 401 without a valid key and 400 naming a bad query field", async () => {
    expect((await earnings(undefined)).status).toBe(401);
    expect((await earnings("psx_nope")).status).toBe(401);
    const s = await supplier([]);
    const res = await earnings(s.apiKey, "?days=0");
    expect(res.status).toBe(400);
    expect(JSON.stringify(await res.json())).toContain("days");
    const empty = (await (await earnings(s.apiKey)).json()) as { accruedMicro: string; devices: unknown[] };
    expect(empty).toMatchObject({ accruedMicro: "0", devices: [] });
  });
});
