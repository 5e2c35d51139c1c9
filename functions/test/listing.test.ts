import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { type RedisClient, upstashRedis } from "../../shared/redis.ts";
import { loadConfig } from "../src/config.ts";
import type { Deps } from "../src/deps.ts";
import { runGuarded } from "../src/jobs/guard.ts";
import { rollupJob } from "../src/jobs/listing.ts";
import {
  decideListing,
  readPoolSnapshot,
  reconcileListings,
  SNAPSHOT_BATCH,
} from "../src/services/listing.ts";
import { computeRollup, refreshRollup } from "../src/services/rollup.ts";
import { forgetDevice, forgetDevices, markManyOnline, markOnline } from "./helpers/presence.ts";

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

/**
 * The real client, counting the requests it sends (each one is an HTTP round trip to Upstash) and
 * showing each answer to `onReply`.
 */
function countingRequests(
  inner: RedisClient,
  onReply: (reply: unknown) => void = () => {},
): { redis: RedisClient; requests: () => number } {
  let n = 0;
  const redis = Object.fromEntries(
    Object.entries(inner).map(([name, call]) => [
      name,
      async (...args: unknown[]) => {
        n++;
        const reply = await (call as (...a: unknown[]) => Promise<unknown>)(...args);
        onReply(reply);
        return reply;
      },
    ]),
  ) as unknown as RedisClient;
  return { redis, requests: () => n };
}

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

  it("the pool snapshot reads at most SNAPSHOT_BATCH endpoints per Redis call and returns each online or listed endpoint once", async () => {
    const c = tenantCountry();
    const ids = Array.from(
      { length: 2 * SNAPSHOT_BATCH + 7 },
      () => `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`,
    );
    try {
      await markManyOnline(
        redis,
        ids.map((id, i) => ({
          id,
          country: c,
          probe: { verified: "1", speedTier: i % 2 ? "fast" : "slow" },
        })),
      );
      // The most endpoints any one call answered for: one call over the whole pool held Redis for seconds.
      let largest = 0;
      const sizing = countingRequests(redis, (reply) => {
        const rows = Array.isArray(reply) ? reply.filter((r) => Array.isArray(r) && r.length === 7) : [];
        largest = Math.max(largest, rows.length);
      });
      const snapshot = await readPoolSnapshot(sizing.redis, Date.now());
      const mine = snapshot.filter((e) => ids.includes(e.endpointId));
      expect(mine.map((e) => e.endpointId).sort()).toEqual([...ids].sort());
      const second = mine.find((e) => e.endpointId === ids[1]);
      expect(second).toMatchObject({
        online: true,
        listed: false,
        probe: { verified: "1", speedTier: "fast" },
      });
      expect(second!.presence.country).toBe(c.toUpperCase());
      expect(largest).toBeGreaterThan(0);
      expect(largest).toBeLessThanOrEqual(SNAPSHOT_BATCH);
    } finally {
      await forgetDevices(redis, ids);
    }
  });

  it("a reconcile over 3,000 endpoints flips each as the one-endpoint rule says, at least 50 endpoints per Redis round trip", async () => {
    const c = tenantCountry();
    const ids = Array.from(
      { length: 3000 },
      () => `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`,
    );
    const mine = new Set(ids);
    // Two in three verified (listed by the first run), one in three not (never listed).
    const verified = ids.filter((_, i) => i % 3 !== 0);
    const byId = (a: { endpointId: string }, b: { endpointId: string }) =>
      a.endpointId.localeCompare(b.endpointId);
    const flipsOf = (run: { flips: { endpointId: string }[] }) =>
      run.flips.filter((f) => mine.has(f.endpointId)).sort(byId);
    try {
      await markManyOnline(
        redis,
        ids.map((id, i) => ({ id, country: c, probe: { verified: i % 3 ? "1" : "0", speedTier: "fast" } })),
      );
      const first = countingRequests(redis);
      const listing = await reconcileListings({ redis: first.redis, db: pool }, Date.now(), "slow");
      expect(first.requests()).toBeLessThan(listing.considered / 50);
      expect(flipsOf(listing)).toEqual(
        verified.map((id) => ({ endpointId: id, action: "list", reason: "verified" })).sort(byId),
      );
      expect(await zcard(keys.poolIndex("peer", c, "any"))).toBe(verified.length);
      expect(await zcard(keys.poolIndex("peer", c, "residential"))).toBe(verified.length);
      // Each endpoint hash as listEndpoint writes it (fast: 4 connections, 2 customers).
      expect(await redis.hgetall(keys.endpoint(verified[0]!))).toMatchObject({
        pool: "peer",
        country: c,
        speedTier: "fast",
        relayInternal: "http://127.0.0.1:1",
        deviceId: verified[0],
        maxConns: "4",
        maxCusts: "2",
        conns: "0",
        listed: "1",
      });
      expect(await isListed(verified.at(-1)!)).toBe(true);
      expect(await isListed(ids[0]!)).toBe(false);

      // The breaker pauses 500 listed endpoints and 500 go offline: each is pulled with its reason.
      const paused = verified.slice(0, 500);
      const gone = verified.slice(500, 1000);
      await markManyOnline(
        redis,
        paused.map((id) => ({
          id,
          country: c,
          probe: { verified: "1", speedTier: "fast", paused: "1", pausedReason: "stalls" },
        })),
      );
      await redis.eval("return redis.call('ZREM', KEYS[1], unpack(ARGV))", [keys.onlineDevices()], gone);
      const second = countingRequests(redis);
      const pulling = await reconcileListings({ redis: second.redis, db: pool }, Date.now(), "slow");
      expect(second.requests()).toBeLessThan(pulling.considered / 50);
      expect(flipsOf(pulling)).toEqual(
        [
          ...paused.map((id) => ({ endpointId: id, action: "delist", reason: "circuit_breaker:stalls" })),
          ...gone.map((id) => ({ endpointId: id, action: "delist", reason: "offline" })),
        ].sort(byId),
      );
      expect(await zcard(keys.poolIndex("peer", c, "any"))).toBe(verified.length - 1000);
      // A pulled endpoint with no tunnels is removed outright.
      expect(await redis.hgetall(keys.endpoint(paused[0]!))).toEqual({});
      expect(await isListed(gone[0]!)).toBe(false);
      const audit = await pool.query<{ flip: string; n: number }>(
        `SELECT action || ':' || (detail->>'reason') AS flip, count(*)::int AS n FROM audit_log
         WHERE actor = 'cron:listing' AND subject = ANY($1::text[]) GROUP BY 1 ORDER BY 1`,
        [ids],
      );
      expect(audit.rows).toEqual([
        { flip: "listing.delist:circuit_breaker:stalls", n: 500 },
        { flip: "listing.delist:offline", n: 500 },
        { flip: "listing.list:verified", n: 2000 },
      ]);
    } finally {
      await forgetDevices(redis, ids);
    }
  }, 120_000);
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
    const rows = await refreshRollup({ redis, db: pool }, new Date());
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

  it("overlapping rollup runs all succeed and leave one whole run's rows", async () => {
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
    const stamped = await storedRunTimes();
    expect(stamped).toHaveLength(1);
    expect(times).toContain(stamped[0]);
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
    const stamped = await storedRunTimes();
    expect(stamped).toHaveLength(1);
    expect(times).toContain(stamped[0]);
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
