import { afterAll, describe, expect, it } from "vitest";
import { ownRedis } from "../test/helpers/env.ts";
import { keys } from "./keys.ts";
import {
  CAPS,
  delistEndpoint,
  type EndpointListing,
  type Hold,
  listEndpoint,
  releaseHold,
  renewHold,
  rotateSession,
  type SelectInput,
  selectEndpoint,
} from "./pool.ts";
import { tcpRedis } from "./redis.node.ts";

// A Redis of its own: other files' API cron and sweepers rewrite the pool's keys in the shared one
// (an endpoint hash this file wrote was deleted under it).
const redisServer = await ownRedis("pool");
const redis = tcpRedis(redisServer.url);
const listed: string[] = [];
afterAll(async () => {
  for (const id of listed) await delistEndpoint(redis, id);
  await redis.del(holdsKey);
  await redis.close();
  await redisServer.stop();
});

// Countries in the user-assigned ISO range, one per test, so parallel test files never share an index.
const uid = () => crypto.randomUUID().slice(0, 8);
async function list(e: Partial<EndpointListing> & { country: string }): Promise<string> {
  const endpointId = e.endpointId ?? `agent_${uid()}${uid()}`;
  await listEndpoint(redis, {
    pool: "peer",
    ipType: "residential",
    speedTier: "fast",
    kind: "peer",
    relayInternal: "http://127.0.0.1:1",
    deviceId: endpointId,
    ...e,
    endpointId,
  });
  listed.push(endpointId);
  return endpointId;
}
const T0 = 1_900_000_000_000;
// This file runs its clock years ahead: a private holds zset keeps its sweeps away from other tests.
const holdsKey = `pool:holds:test_${uid()}`;
const base = (over: Partial<SelectInput>): SelectInput => ({
  holdsKey,
  keyId: `pk_${uid()}`,
  pool: "any",
  country: "xa",
  maxConnections: 0,
  now: T0,
  leaseMs: 30_000,
  ...over,
});

describe("endpoint pool selection", () => {
  it("200 parallel selections never exceed any endpoint's connection or customer caps", async () => {
    const country = "xa";
    const ids = {
      fast: await list({ country, speedTier: "fast" }),
      medium: await list({ country, speedTier: "medium" }),
      slow: await list({ country, speedTier: "slow" }),
      modem: await list({
        country,
        pool: "mbl",
        kind: "modem",
        ipType: "mobile",
        host: "127.0.0.1",
        port: 1,
      }),
    };
    const customers = Array.from({ length: 6 }, () => `pk_${uid()}`);
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        selectEndpoint(redis, base({ country, keyId: customers[i % customers.length] as string })),
      ),
    );
    const holds = results.flatMap((r) => (r.ok ? [r.hold] : []));
    const perEndpoint = new Map<string, { conns: number; customers: Set<string> }>();
    for (const h of holds) {
      const e = perEndpoint.get(h.endpointId) ?? { conns: 0, customers: new Set() };
      e.conns++;
      e.customers.add(h.keyId);
      perEndpoint.set(h.endpointId, e);
    }
    for (const [kind, id] of Object.entries(ids)) {
      const cap = CAPS[kind === "modem" ? "modem" : (kind as "fast")];
      const seen = perEndpoint.get(id);
      expect(seen, kind).toBeDefined();
      expect(seen!.conns, kind).toBeLessThanOrEqual(cap.conns);
      expect(seen!.customers.size, kind).toBeLessThanOrEqual(cap.customers);
      const h = await redis.hgetall(keys.endpoint(id));
      expect(Number(h.conns)).toBe(seen!.conns);
      expect(Number(h.custs)).toBe(seen!.customers.size);
    }
    // Every endpoint is listed and full: busy (E_NO_CAPACITY), not empty (E_NO_STOCK).
    expect(results.filter((r) => !r.ok).every((r) => !r.ok && r.code === "E_NO_CAPACITY")).toBe(true);
    for (const h of holds) expect(await releaseHold(redis, h, T0)).toBe(true);
    for (const id of Object.values(ids)) {
      const h = await redis.hgetall(keys.endpoint(id));
      expect([h.conns, h.custs]).toEqual(["0", "0"]);
    }
  });

  it("a hold that is not renewed expires after the lease and its capacity returns to the pool", async () => {
    const country = "xb";
    const id = await list({ country, speedTier: "slow" });
    const keyId = `pk_${uid()}`;
    const a = await selectEndpoint(redis, base({ country, keyId, leaseMs: 1000 }));
    const b = await selectEndpoint(redis, base({ country, keyId, leaseMs: 1000 }));
    expect(a.ok && b.ok).toBe(true);
    expect((await selectEndpoint(redis, base({ country, keyId, now: T0 + 500 }))).ok).toBe(false);
    // a is renewed, b is not: after the first lease exactly one slot is free again
    expect(await renewHold(redis, (a as { hold: Hold }).hold, T0 + 900, 1000)).toBe(true);
    const c = await selectEndpoint(redis, base({ country, keyId, now: T0 + 1001, leaseMs: 1000 }));
    expect(c.ok && c.endpoint.endpointId).toBe(id);
    expect(await renewHold(redis, (b as { hold: Hold }).hold, T0 + 1002, 1000)).toBe(false);
    expect((await selectEndpoint(redis, base({ country, keyId, now: T0 + 1002 }))).ok).toBe(false);
    await releaseHold(redis, (a as { hold: Hold }).hold, T0 + 1003);
    await releaseHold(redis, (c as { hold: Hold }).hold, T0 + 1003);
    expect((await redis.hgetall(keys.endpoint(id))).conns).toBe("0");
  });

  it("filters pool and iptype as hard filters and serves pool any from both", async () => {
    const country = "xc";
    const peer = await list({ country, pool: "peer", ipType: "residential" });
    const modem = await list({
      country,
      pool: "mbl",
      kind: "modem",
      ipType: "mobile",
      host: "127.0.0.1",
      port: 1,
    });
    const pick = async (over: Partial<SelectInput>) => {
      const r = await selectEndpoint(redis, base({ country, ...over }));
      if (r.ok) await releaseHold(redis, r.hold, T0);
      return r.ok ? r.endpoint.endpointId : r.code;
    };
    expect(await pick({ pool: "mbl" })).toBe(modem);
    expect(await pick({ pool: "peer" })).toBe(peer);
    expect(await pick({ pool: "any", ipType: "mobile" })).toBe(modem);
    expect(await pick({ pool: "peer", ipType: "mobile" })).toBe("E_NO_STOCK");
    expect(await pick({ pool: "any", country: "xz" })).toBe("E_NO_STOCK");
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) seen.add(String(await pick({ pool: "any", random: i / 20 })));
    expect(seen).toEqual(new Set([peer, modem]));
    await delistEndpoint(redis, modem);
    expect(await pick({ pool: "mbl" })).toBe("E_NO_STOCK");
  });

  it("enforces the credential's connection limit", async () => {
    const country = "xd";
    await list({ country, kind: "modem", pool: "mbl", host: "127.0.0.1", port: 1 });
    const keyId = `pk_${uid()}`;
    const a = await selectEndpoint(redis, base({ country, keyId, maxConnections: 2 }));
    const b = await selectEndpoint(redis, base({ country, keyId, maxConnections: 2 }));
    const c = await selectEndpoint(redis, base({ country, keyId, maxConnections: 2 }));
    expect([a.ok, b.ok, c.ok ? "ok" : c.code]).toEqual([true, true, "E_RATE_LIMITED"]);
    if (a.ok) await releaseHold(redis, a.hold, T0);
    const d = await selectEndpoint(redis, base({ country, keyId, maxConnections: 2 }));
    expect(d.ok).toBe(true);
    for (const r of [b, d]) if (r.ok) await releaseHold(redis, r.hold, T0);
  });

  it("checks candidates lazily: a page of idle endpoints costs one check, and stale index entries are passed over", async () => {
    const country = "xi";
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await list({ country, speedTier: "fast" }));
    const pick = async (random: number) => {
      const r = await selectEndpoint(redis, base({ country, random }));
      if (r.ok) await releaseHold(redis, r.hold, T0);
      return r.ok ? r.endpoint.endpointId : r.code;
    };
    const hmgets = async () =>
      Number(/cmdstat_hmget:calls=(\d+)/.exec(String(await redis.raw.info("commandstats")))?.[1] ?? 0);
    await redis.raw.config("RESETSTAT");
    expect(ids).toContain(await pick(0.5));
    // The chosen candidate's check, and its reindexing on select and on release; not one per candidate.
    expect(await hmgets()).toBeLessThanOrEqual(4);

    // Every endpoint but one turns unlisted behind the index's back (a delisting racing the read):
    // whatever the random start, the walk passes over the stale ones, onto the second page too.
    const byIndexOrder = [...ids].sort();
    const survivor = byIndexOrder[35]!;
    for (const id of ids) if (id !== survivor) await redis.raw.hset(keys.endpoint(id), "listed", "0");
    for (const random of [0, 0.3, 0.6, 0.99]) expect(await pick(random)).toBe(survivor);
    await redis.raw.hset(keys.endpoint(survivor), "listed", "0");
    expect(await pick(0.5)).toBe("E_NO_STOCK");
  });

  it("carrier and city are soft preferences: the best match wins, and a miss still gets an endpoint", async () => {
    const country = "xj";
    const tmo = [await list({ country, carrier: "tmo" }), await list({ country, carrier: "tmo" })];
    const berlin = await list({ country, carrier: "tmo", city: "berlin" });
    const att = [
      await list({ country, carrier: "att" }),
      await list({ country, carrier: "att", city: "berlin" }),
    ];
    const pick = async (over: Partial<SelectInput>) => {
      const r = await selectEndpoint(redis, base({ country, ...over }));
      if (r.ok) await releaseHold(redis, r.hold, T0);
      return r.ok ? r.endpoint.endpointId : r.code;
    };
    const randoms = [0, 0.2, 0.4, 0.6, 0.8, 0.99];
    // One at a time: each pick is released before the next (a held endpoint ranks by its load too).
    const seen = async (over: Partial<SelectInput>) => {
      const out = new Set<string>();
      for (const random of randoms) out.add(await pick({ ...over, random }));
      return out;
    };
    expect(await seen({ carrier: "tmo" })).toEqual(new Set([...tmo, berlin]));
    expect(await seen({ carrier: "tmo", city: "berlin" })).toEqual(new Set([berlin]));
    // one miss each: the att device in berlin and the tmo devices elsewhere tie
    expect([...(await seen({ carrier: "att", city: "munich" }))].every((id) => att.includes(id))).toBe(true);
    expect((await seen({ carrier: "vz" })).size).toBeGreaterThan(1);
    // the best match gone (still indexed): the next best, one miss (tmo elsewhere, att in berlin)
    await redis.raw.hset(keys.endpoint(berlin), "listed", "0");
    expect(await seen({ carrier: "tmo", city: "berlin" })).toEqual(new Set([...tmo, att[1]]));
  });
});

describe("sessions", () => {
  async function sessionPool(country: string, n: number) {
    const ids: string[] = [];
    for (let i = 0; i < n; i++)
      ids.push(await list({ country, kind: "modem", pool: "mbl", host: "127.0.0.1", port: 1 }));
    return ids;
  }
  async function pickAt(over: Partial<SelectInput>): Promise<string> {
    const r = await selectEndpoint(redis, base(over));
    if (!r.ok) return r.code;
    await releaseHold(redis, r.hold, over.now ?? T0);
    return r.endpoint.endpointId;
  }

  it("sticky keeps the same device across connections and time; no sid is a fresh pick each time", async () => {
    const country = "xe";
    await sessionPool(country, 5);
    const keyId = `pk_${uid()}`;
    const sid = `job_${uid()}`;
    const first = await pickAt({ country, keyId, sid, rot: "sticky", random: 0.1 });
    for (let i = 1; i <= 10; i++) {
      expect(
        await pickAt({ country, keyId, sid, rot: "sticky", random: i / 11, now: T0 + i * 20 * 60_000 }),
      ).toBe(first);
    }
    const fresh = new Set<string>();
    for (let i = 0; i < 10; i++) fresh.add(await pickAt({ country, keyId, random: i / 10 }));
    expect(fresh.size).toBeGreaterThan(1);
  });

  it("auto5 keeps the device for five minutes and then moves to another one", async () => {
    const country = "xf";
    await sessionPool(country, 3);
    const keyId = `pk_${uid()}`;
    const sid = `job_${uid()}`;
    const at = (ms: number, random = 0.5) =>
      pickAt({ country, keyId, sid, rot: "auto5", now: T0 + ms, random });
    const first = await at(0);
    expect(await at(60_000, 0.9)).toBe(first);
    expect(await at(299_999, 0.1)).toBe(first);
    const second = await at(300_000);
    expect(second).not.toBe(first);
    expect(await at(400_000, 0.99)).toBe(second);
    expect(await at(600_001)).not.toBe(second);
  });

  it("ondemand moves only when rotated; hard answers E_SESSION_PEER_GONE when its device is delisted", async () => {
    const country = "xg";
    await sessionPool(country, 3);
    const keyId = `pk_${uid()}`;
    const sid = `job_${uid()}`;
    const od = (ms: number) =>
      pickAt({ country, keyId, sid, rot: "ondemand", now: T0 + ms, random: Math.random() });
    const first = await od(0);
    expect(await od(3_600_000 - 1)).toBe(first);
    expect(await rotateSession(redis, keyId, sid)).toBe(true);
    const second = await od(10);
    expect(second).not.toBe(first);
    expect(await od(20)).toBe(second);

    const hardSid = `hard_${uid()}`;
    const hard = () => pickAt({ country, keyId, sid: hardSid, rot: "hard", random: Math.random() });
    const pinned = await hard();
    await delistEndpoint(redis, pinned);
    expect(await hard()).toBe("E_SESSION_PEER_GONE");
    // sticky is the forgiving variant: it moves to a healthy device instead
    const stickySid = `stk_${uid()}`;
    const sticky = () => pickAt({ country, keyId, sid: stickySid, rot: "sticky", random: Math.random() });
    const s1 = await sticky();
    await delistEndpoint(redis, s1);
    const s2 = await sticky();
    expect(s2).not.toBe(s1);
    expect(s2).toMatch(/^agent_/);
  });

  it("a session expires after its ttl and then picks afresh", async () => {
    const country = "xh";
    await sessionPool(country, 4);
    const keyId = `pk_${uid()}`;
    const sid = `job_${uid()}`;
    await pickAt({ country, keyId, sid, rot: "sticky", ttlSec: 60 });
    expect(await redis.raw.pttl(keys.session(keyId, sid))).toBeGreaterThan(59_000);
    expect(await redis.raw.pttl(keys.session(keyId, sid))).toBeLessThanOrEqual(60_000);
  });
});
