import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { loadConfig } from "../src/config.ts";
import type { Deps } from "../src/deps.ts";
import { runGuarded } from "../src/jobs/guard.ts";
import { rollupJob } from "../src/jobs/listing.ts";
import { decideListing, readPoolSnapshot, reconcileListings } from "../src/services/listing.ts";
import { computeRollup, refreshRollup } from "../src/services/rollup.ts";
import { forgetDevice, markOnline } from "./helpers/presence.ts";

const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
const created: string[] = [];
afterAll(async () => {
  // Leave no test endpoint in the shared pool: another suite selecting "any" country must not find it.
  for (const id of created) {
    await forgetDevice(redis, id);
  }
  await pool.end();
});

// Each test uses its own user-assigned ISO-2 country (x?) and device ids, so counts are its own.
let seq = 0;
function tenantCountry() {
  return `x${String.fromCharCode(97 + (seq++ % 26))}`;
}
function deviceId() {
  const id = `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  created.push(id);
  return id;
}

const online = (id: string, country: string, now = Date.now()) => markOnline(redis, id, country, now);

async function probe(id: string, fields: Record<string, string>) {
  await redis.hset(keys.probe(id), fields);
}

const zcard = async (key: string) =>
  Number(await redis.eval("return redis.call('ZCARD', KEYS[1])", [key], []));
const isListed = async (id: string) =>
  Number(await redis.eval("return redis.call('SISMEMBER', KEYS[1], ARGV[1])", [keys.poolListed()], [id])) ===
  1;

async function auditFor(id: string) {
  const { rows } = await pool.query<{ action: string; detail: { reason: string } }>(
    "SELECT action, detail FROM audit_log WHERE subject = $1 ORDER BY id",
    [id],
  );
  return rows.map((r) => `${r.action}:${r.detail.reason}`);
}

describe("auto-listing", () => {
  it("lists a verified, healthy device and audits the flip; the second run changes nothing", async () => {
    const c = tenantCountry();
    const id = deviceId();
    await online(id, c);
    await probe(id, { verified: "1", speedTier: "fast", passStreak: "2", failStreak: "0" });
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    expect(await isListed(id)).toBe(true);
    expect(await zcard(keys.poolIndex("peer", c, "any"))).toBe(1);
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    expect(await auditFor(id)).toEqual(["listing.list:verified"]);
  });

  it("does not list unverified or too-slow devices", async () => {
    const c = tenantCountry();
    const unverified = deviceId();
    const slow = deviceId();
    await online(unverified, c);
    await online(slow, c);
    await probe(unverified, { verified: "0", speedTier: "fast", passStreak: "1" });
    await probe(slow, { verified: "1", speedTier: "unknown" });
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    expect(await isListed(unverified)).toBe(false);
    expect(await isListed(slow)).toBe(false);
  });

  it("pulls a listed device when the breaker pauses it, when it is demoted, and when it goes offline", async () => {
    const c = tenantCountry();
    const [paused, demoted, gone] = [deviceId(), deviceId(), deviceId()];
    for (const id of [paused, demoted, gone]) {
      await online(id, c);
      await probe(id, { verified: "1", speedTier: "medium" });
    }
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    expect(await zcard(keys.poolIndex("peer", c, "any"))).toBe(3);
    await probe(paused, { paused: "1", pausedReason: "tls_dropped_after_hello" });
    await probe(demoted, { verified: "0", failStreak: "3" });
    await redis.del(keys.presence(gone));
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    expect(await zcard(keys.poolIndex("peer", c, "any"))).toBe(0);
    expect(await auditFor(paused)).toEqual([
      "listing.list:verified",
      "listing.delist:circuit_breaker:tls_dropped_after_hello",
    ]);
    expect(await auditFor(demoted)).toEqual(["listing.list:verified", "listing.delist:unverified"]);
    expect(await auditFor(gone)).toEqual(["listing.list:verified", "listing.delist:offline"]);
  });

  it("decideListing keeps modems it cannot see in presence, pulling them only on probe failures", () => {
    const modem = {
      endpointId: "modem_1",
      online: false,
      listed: true,
      presence: {},
      endpoint: { kind: "modem", pool: "mbl" },
    };
    expect(decideListing({ ...modem, probe: {} }, "slow")).toEqual({ action: "none" });
    expect(decideListing({ ...modem, probe: { verified: "0", failStreak: "3" } }, "slow")).toMatchObject({
      action: "delist",
    });
  });
});

/**
 * Starts `runs` while this test holds pool_rollup in SHARE mode (no writer gets in) and lets go once
 * every one of them waits for the table: their transactions then overlap, as two slow cron runs' do.
 */
async function overlapping<T>(runs: (() => Promise<T>)[]): Promise<PromiseSettledResult<T>[]> {
  const gate = await pool.connect();
  try {
    await gate.query("BEGIN");
    await gate.query("LOCK TABLE pool_rollup IN SHARE MODE");
    const settled = Promise.allSettled(runs.map((run) => run()));
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { rows } = await gate.query<{ waiting: number }>(
        "SELECT count(*)::int AS waiting FROM pg_locks WHERE relation = 'pool_rollup'::regclass AND NOT granted",
      );
      if (rows[0]!.waiting >= runs.length) break;
      if (Date.now() > deadline)
        throw new Error(`${rows[0]!.waiting} of ${runs.length} runs reached pool_rollup`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await gate.query("COMMIT");
    return await settled;
  } catch (err) {
    await gate.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    gate.release();
  }
}

/** The stored rollup's computed_at values (one, when a single run wrote the table). */
async function storedRunTimes() {
  const { rows } = await pool.query<{ at: Date }>("SELECT DISTINCT computed_at AS at FROM pool_rollup");
  return rows.map((r) => new Date(r.at).getTime());
}

describe("rollup and stock", () => {
  it("the rollup equals a direct count of the Redis state per pool and country", async () => {
    const c = tenantCountry();
    const ids = [deviceId(), deviceId(), deviceId(), deviceId()];
    for (const id of ids) await online(id, c);
    await probe(ids[0]!, { verified: "1", speedTier: "fast" });
    await probe(ids[1]!, { verified: "1", speedTier: "slow" });
    await probe(ids[2]!, { verified: "1", speedTier: "unknown" });
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    const { rows } = await refreshRollup({ redis, db: pool }, new Date());
    const row = rows.find((r) => r.pool === "peer" && r.country === c)!;
    // Direct counts from the state that routes customers:
    expect(row.listed).toBe(await zcard(keys.poolIndex("peer", c, "any")));
    expect(row.online).toBe(4);
    expect(row.verified).toBe(3);
    expect(row.tiers).toEqual({ fast: 1, medium: 0, slow: 1, unknown: 0 });
    const stored = await pool.query<{ listed: number; online: number }>(
      "SELECT listed, online FROM pool_rollup WHERE pool = 'peer' AND country = $1",
      [c],
    );
    expect(stored.rows[0]).toEqual({ listed: 2, online: 4 });
    // The pure function over the same snapshot gives the same answer as the stored table.
    const again = computeRollup(await readPoolSnapshot(redis, Date.now()), new Map());
    expect(again.find((r) => r.country === c)?.listed).toBe(2);
  });

  it("overlapping rollup runs all succeed and leave one run's rows: the newest", async () => {
    const c = tenantCountry();
    await online(deviceId(), c);
    await online(deviceId(), c);
    const base = Date.now();
    const times = [base, base + 1, base + 2];
    const results = await overlapping(
      times.map((t) => () => refreshRollup({ redis, db: pool }, new Date(t))),
    );
    expect(results.map((r) => (r.status === "rejected" ? String(r.reason) : r.status))).toEqual([
      "fulfilled",
      "fulfilled",
      "fulfilled",
    ]);
    expect(await storedRunTimes()).toEqual([base + 2]);
    const stored = await pool.query<{ online: number }>(
      "SELECT online FROM pool_rollup WHERE pool = 'peer' AND country = $1",
      [c],
    );
    expect(stored.rows).toEqual([{ online: 2 }]);
  });

  it("two pool-rollup job runs that overlap are both recorded ok in job_runs", async () => {
    const c = tenantCountry();
    await online(deviceId(), c);
    const base = Date.now();
    const times = [base, base + 1];
    const deps = (at: number): Deps => ({ config: loadConfig(e), redis, db: pool, now: () => new Date(at) });
    const results = await overlapping(times.map((t) => () => runGuarded(deps(t), rollupJob)));
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled"]);
    const runs = await pool.query<{ status: string; detail: Record<string, unknown> }>(
      "SELECT status, detail FROM job_runs WHERE job = 'pool-rollup' AND started_at = ANY($1::timestamptz[]) ORDER BY started_at",
      [times.map((t) => new Date(t).toISOString())],
    );
    expect(runs.rows.map((r) => `${r.status} ${r.detail.error ?? ""}`.trim())).toEqual(["ok", "ok"]);
    expect(await storedRunTimes()).toEqual([base + 1]);
  });

  it("a run older than the stored rollup writes nothing: a slow run cannot put back stale figures", async () => {
    const c = tenantCountry();
    await online(deviceId(), c);
    const newer = Date.now();
    await refreshRollup({ redis, db: pool }, new Date(newer));
    // A device comes online, then a run that started before the one above commits.
    await online(deviceId(), c);
    const stale = await refreshRollup({ redis, db: pool }, new Date(newer - 1_000));
    expect(await storedRunTimes()).toEqual([newer]);
    const stored = await pool.query<{ online: number }>(
      "SELECT online FROM pool_rollup WHERE pool = 'peer' AND country = $1",
      [c],
    );
    expect(stored.rows).toEqual([{ online: 1 }]);
    expect(stale.written).toBe(false);
  });

  it("GET /v1/gateway/pool/stock serves counts per pool and country and never an address", async () => {
    const c = tenantCountry();
    const id = deviceId();
    await online(id, c);
    await probe(id, { verified: "1", speedTier: "fast" });
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    await refreshRollup({ redis, db: pool }, new Date());
    const res = await SELF.fetch("http://api.test/v1/gateway/pool/stock");
    expect(res.status).toBe(200);
    const text = await res.text();
    const body = JSON.parse(text) as {
      updatedAt: string;
      pools: Record<string, { routable: number; countries: Record<string, object> }>;
    };
    expect(Object.keys(body).sort()).toEqual(["pools", "updatedAt"]);
    expect(Object.keys(body.pools).sort()).toEqual(["mbl", "peer"]);
    expect(body.pools.peer!.countries[c]).toEqual({ routable: 1, online: 1 });
    for (const p of Object.values(body.pools)) {
      for (const counts of Object.values(p.countries))
        expect(Object.keys(counts).sort()).toEqual(["online", "routable"]);
    }
    expect(text).not.toMatch(/\d+\.\d+\.\d+\.\d+|127\.0\.0\.1|http:|agent_|relay/);
  });
});
