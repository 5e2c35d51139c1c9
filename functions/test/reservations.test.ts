import { env } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { delistEndpoint, listEndpoint, reserveEndpoint } from "../../shared/pool.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { reservationsJob } from "../src/jobs/reservations.ts";
import { runScheduled } from "../src/scheduled.ts";
import { mintCredential } from "../src/services/credentials.ts";
import { readPoolSnapshot } from "../src/services/listing.ts";
import { computeRollup } from "../src/services/rollup.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

// The dedicated-port cron inside workerd, against this run's real Postgres and Redis (over REST).
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
const tenants: Tenant[] = [];
const modems: string[] = [];

afterAll(async () => {
  await pool.query("DELETE FROM modem_reservations WHERE modem_exit_id = ANY($1)", [modems]);
  await pool.query("DELETE FROM modem_exits WHERE id = ANY($1)", [modems]);
  for (const t of tenants) await t.cleanup();
  for (const id of modems) {
    await redis.del(keys.endpointReservation(id));
    await delistEndpoint(redis, id);
  }
  await pool.end();
});

/** A listed modem (Postgres and pool) reserved in Postgres for a fresh pinned key until `endsAt`. */
async function rented(endsAt: Date) {
  const t = await createTenant(pool, redis, { kind: "house" });
  tenants.push(t);
  const country = `q${String.fromCharCode(120 + modems.length)}`; // qx, qy, qz: one per modem
  const modemId = `modem_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  modems.push(modemId);
  await pool.query(
    "INSERT INTO modem_exits (id, host, port, country, created_by) VALUES ($1, $2, 8080, $3, $4)",
    [modemId, `${modemId}.test`, country, t.accountId],
  );
  await listEndpoint(redis, {
    endpointId: modemId,
    pool: "mbl",
    kind: "modem",
    country,
    ipType: "mobile",
    speedTier: "unknown",
    host: `${modemId}.test`,
    port: 8080,
  });
  const minted = await mintCredential({
    deps: { db: pool, now: () => new Date() },
    input: { accountId: t.accountId, actor: "test", tier: "mbl", capBytes: 1000, endpointId: modemId },
  });
  const keyId = minted!.credential.id;
  await pool.query(
    `INSERT INTO modem_reservations (id, modem_exit_id, credential_id, starts_at, ends_at)
     VALUES ($1, $2, $3, $4, $5)`,
    [`mres_${modemId.slice(6)}`, modemId, keyId, new Date(endsAt.getTime() - 86_400_000), endsAt],
  );
  return { modemId, keyId, country };
}

describe("dedicated-reservations job inside workerd", () => {
  it("releases a reservation whose time is up and puts the modem back in the shared index", async () => {
    const { modemId, keyId, country } = await rented(new Date(Date.now() - 1000));
    await reserveEndpoint(redis, modemId, keyId);
    const [out] = await runScheduled(e, [reservationsJob]);
    expect(out).toMatchObject({ job: "dedicated-reservations", status: "ok" });
    expect(out!.detail.released).toBeGreaterThanOrEqual(1);
    expect(await redis.get(keys.endpointReservation(modemId))).toBeNull();
    const { rows } = await pool.query<{ released_reason: string }>(
      "SELECT released_reason FROM modem_reservations WHERE modem_exit_id = $1",
      [modemId],
    );
    expect(rows[0]?.released_reason).toBe("expired");
    const indexed = await redis.eval(
      "return redis.call('ZSCORE', KEYS[1], ARGV[1])",
      [keys.poolIndex("mbl", country, "any")],
      [modemId],
    );
    expect(indexed).not.toBeNull();
  });

  it("re-asserts a live reservation whose Redis write was lost after the commit", async () => {
    const { modemId, keyId } = await rented(new Date(Date.now() + 3_600_000));
    expect(await redis.get(keys.endpointReservation(modemId))).toBeNull();
    const [out] = await runScheduled(e, [reservationsJob]);
    expect(out).toMatchObject({ status: "ok" });
    expect(await redis.get(keys.endpointReservation(modemId))).toBe(keyId);
  });

  it("a rented modem is not counted as routable stock (the pool product's country list) until released", async () => {
    const { modemId, keyId, country } = await rented(new Date(Date.now() + 3_600_000));
    const listed = async () =>
      computeRollup(await readPoolSnapshot(redis, Date.now()), new Map()).find(
        (r) => r.pool === "mbl" && r.country === country,
      )?.listed;
    expect(await listed()).toBe(1);
    await reserveEndpoint(redis, modemId, keyId);
    expect(await listed()).toBe(0);
    await pool.query(
      "UPDATE modem_reservations SET ends_at = now() - interval '1 second' WHERE credential_id = $1",
      [keyId],
    );
    await runScheduled(e, [reservationsJob]);
    expect(await listed()).toBe(1);
  });
});
