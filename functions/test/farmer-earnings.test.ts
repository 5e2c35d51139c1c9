import { env } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { runScript } from "../../shared/lua/script.ts";
import { deviceBytesFlush } from "../../shared/lua/scripts.gen.ts";
import { BYTES_PER_GB } from "../../shared/money.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { supplierBalance } from "../src/services/ledger.ts";
import { settleModemEarnings } from "../src/services/modem-earnings.ts";
import { registerModemExit } from "../src/services/modem-exits.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

// Farmers' modem earnings (ADR 0017) settled from the gateway's counters, inside workerd: a house
// modem earns no one anything, and a farmer assigned later is paid only for what the modem served
// from then on; a repeated settlement pays nothing twice.
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
const exits: string[] = [];
const tenants: Tenant[] = [];
afterAll(async () => {
  for (const id of exits) {
    await redis.del(keys.deviceBytes(id));
    await redis.eval("return redis.call('SREM', KEYS[1], ARGV[1])", [keys.unsettledModems()], [id]);
  }
  for (const t of tenants) await t.cleanup().catch(() => {});
  await pool.end();
});

/** What a gateway flushes for `bytes` served by the exit (writer-less: a test has no process id). */
const serve = (exitId: string, bytes: bigint) =>
  runScript(
    redis,
    deviceBytesFlush,
    [keys.deviceBytes(exitId), keys.servedModems(), keys.unsettledModems()],
    [String(bytes), "0", exitId, String(Date.now())],
  );

describe("modem farmers' earnings", () => {
  it("a house modem moves its watermark but pays no one; a farmer assigned later earns only new bytes, once", async () => {
    const operator = await createTenant(pool, redis, { kind: "operator" });
    const farmer = await createTenant(pool, redis, { kind: "farmer" });
    tenants.push(operator, farmer);
    const { exit } = await registerModemExit(pool, operator.accountId, {
      host: "127.0.0.1",
      port: 30_000 + Math.floor(Math.random() * 30_000),
      country: "zz",
    });
    exits.push(exit.id);
    await pool.query("UPDATE accounts SET earnings_per_gb = $2 WHERE id = $1", [
      farmer.accountId,
      JSON.stringify({ mobile: "2", residential: "0" }),
    ]);

    // Served while it was the house's: settled to nobody.
    await serve(exit.id, 3n * BYTES_PER_GB);
    await settleModemEarnings({ redis, db: pool }, 10_000);
    const rowsFor = async () =>
      (await pool.query("SELECT account_id FROM earnings_ledger WHERE modem_exit_id = $1", [exit.id])).rows;
    expect(await rowsFor()).toEqual([]);
    const watermark = async () =>
      (
        await pool.query<{ s: string }>("SELECT settled_bytes::text AS s FROM modem_exits WHERE id = $1", [
          exit.id,
        ])
      ).rows[0]!.s;
    expect(await watermark()).toBe(String(3n * BYTES_PER_GB));

    // Assigned to the farmer: half a GB more pays the farmer's mobile override, and only that.
    await registerModemExit(pool, operator.accountId, {
      host: exit.host,
      port: exit.port,
      country: "zz",
      farmerAccountId: farmer.accountId,
    });
    await serve(exit.id, BYTES_PER_GB / 2n);
    await settleModemEarnings({ redis, db: pool }, 10_000);
    await settleModemEarnings({ redis, db: pool }, 10_000);
    expect(await rowsFor()).toEqual([{ account_id: farmer.accountId }]);
    expect((await supplierBalance(pool, farmer.accountId)).availableMicro).toBe(1_000_000n);
    const audit = await pool.query(
      "SELECT detail FROM audit_log WHERE action = 'modem_exit.update' AND subject = $1",
      [exit.id],
    );
    expect(audit.rows.at(-1)).toMatchObject({ detail: { farmerAccountId: farmer.accountId } });
  });
});
