import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { presenceKeepalive, presenceRefresh } from "../shared/lua/scripts.gen.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { normaliseRelayUrl } from "../shared/relay-url.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { startRelayProcess } from "../test/helpers/relay.ts";
import { connectPeer } from "./testing/peer.ts";
import { startTestRelay, type TestRelay } from "./testing/relay.ts";

let a: TestRelay;
let b: TestRelay;
let redis: TcpRedis;

beforeAll(async () => {
  [a, b] = await Promise.all([startTestRelay({ RELAY_REGION: "us" }), startTestRelay()]);
  redis = tcpRedis(stateEnv().REDIS_URL);
});

afterAll(async () => {
  await Promise.all([a?.close(), b?.close(), redis?.close()]);
});

describe("presence in Redis", () => {
  it("a device whose 8 sockets connect at once is written a few times, not once per socket and device_info, and ends with all 8", async () => {
    const id = a.newDeviceId();
    const token = await a.token(id, { ipType: "residential" });
    // Counts this device's presence writes on the relay's own Redis client.
    const redisOfRelay = a.relay.state.redis;
    const evalsha = redisOfRelay.evalsha;
    let writes = 0;
    redisOfRelay.evalsha = (sha, keyList, args) => {
      if (sha === presenceRefresh.sha && keyList[0] === keys.presence(id)) writes++;
      return evalsha(sha, keyList, args);
    };
    try {
      const peers = await Promise.all(
        Array.from({ length: 8 }, () => connectPeer({ url: a.relay.wsUrl, token })),
      );
      await Promise.all(peers.map((p) => p.waitFor("connected")));
      await expect
        .poll(() => redis.hgetall(keys.presence(id)))
        .toMatchObject({ sockets: "8", carrier: "test", protocol: "binary-v1" });
      // One write per socket and one per device_info would be 16.
      expect(writes).toBeGreaterThanOrEqual(2);
      expect(writes).toBeLessThanOrEqual(12);
      console.log(`presence writes for 8 sockets + 8 device_info: ${writes}`);
      for (const p of peers) p.close();
      await expect.poll(() => redis.hgetall(keys.presence(id))).toEqual({});
    } finally {
      redisOfRelay.evalsha = evalsha;
    }
  });

  it("takes the country from the token's geo claim (the API's view) over the peer's device_info", async () => {
    const id = a.newDeviceId();
    const token = await a.token(id, { ipType: "mobile", geo: "DE" });
    const p = await connectPeer({ url: a.relay.wsUrl, token }); // device_info says US
    await p.waitFor("connected");
    await expect
      .poll(() => redis.hgetall(keys.presence(id)))
      .toMatchObject({ ipType: "mobile", country: "DE", carrier: "test" });
    p.close();
    await expect.poll(() => redis.hgetall(keys.presence(id))).toEqual({});
  });

  it("appears with the relay, socket count and device_info fields, follows the socket count, and disappears with the last socket", async () => {
    const id = a.newDeviceId();
    const token = await a.token(id, { ipType: "residential", acct: "acct_presence" });
    const before = Date.now();
    const p1 = await connectPeer({ url: a.relay.wsUrl, token, flow: true });
    await p1.waitFor("connected");
    await expect
      .poll(() => redis.hgetall(keys.presence(id)))
      .toMatchObject({
        relayId: a.relay.relayId,
        relayInternal: a.relay.internalUrl,
        sockets: "1",
        ipType: "residential",
        accountId: "acct_presence",
        country: "US",
        carrier: "test",
        sdkVersion: "relay-test/1",
        protocol: "binary-v1",
        capabilities: "flow-v1",
      });
    const score = Number(await redis.raw.zscore(keys.onlineDevices(), id));
    expect(score).toBeGreaterThanOrEqual(before);
    const ttl = await redis.raw.ttl(keys.presence(id));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30);

    const p2 = await connectPeer({ url: a.relay.wsUrl, token });
    await p2.waitFor("connected");
    await expect.poll(async () => (await redis.hgetall(keys.presence(id))).sockets).toBe("2");
    p1.close();
    await expect.poll(async () => (await redis.hgetall(keys.presence(id))).sockets).toBe("1");
    p2.close();
    await expect.poll(() => redis.hgetall(keys.presence(id))).toEqual({});
    expect(await redis.raw.zscore(keys.onlineDevices(), id)).toBeNull();
  });

  it("a relay that lost a device to another relay does not delete the other relay's presence", async () => {
    const id = a.newDeviceId();
    const onA = await connectPeer({ url: a.relay.wsUrl, token: await a.token(id) });
    await onA.waitFor("connected");
    await expect.poll(async () => (await redis.hgetall(keys.presence(id))).relayId).toBe(a.relay.relayId);
    // The device moves (e.g. after relay_redirect): its new socket lands on b before a's closes.
    const onB = await connectPeer({ url: b.relay.wsUrl, token: await b.token(id) });
    await onB.waitFor("connected");
    await expect.poll(async () => (await redis.hgetall(keys.presence(id))).relayId).toBe(b.relay.relayId);
    onA.close();
    await onA.closed;
    await expect.poll(() => a.relay.state.devices.has(id)).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    expect((await redis.hgetall(keys.presence(id))).relayId).toBe(b.relay.relayId);
    onB.close();
    await expect.poll(() => redis.hgetall(keys.presence(id))).toEqual({});
  });

  it("a listed device's endpoint follows it to the relay it connects to; no endpoint is created for an unlisted one", async () => {
    const id = a.newDeviceId();
    // Listed while on a relay that has since died (what the listing cron wrote).
    await redis.hset(keys.endpoint(id), { pool: "peer", relayInternal: "http://127.0.0.1:9", listed: "1" });
    const p = await connectPeer({ url: a.relay.wsUrl, token: await a.token(id) });
    await p.waitFor("connected");
    await expect
      .poll(async () => (await redis.hgetall(keys.endpoint(id))).relayInternal)
      .toBe(a.relay.internalUrl);
    expect((await redis.hgetall(keys.endpoint(id))).listed).toBe("1");
    const unlisted = a.newDeviceId();
    const q = await connectPeer({ url: a.relay.wsUrl, token: await a.token(unlisted) });
    await q.waitFor("connected");
    await expect.poll(async () => (await redis.hgetall(keys.presence(unlisted))).sockets).toBe("1");
    expect(await redis.raw.exists(keys.endpoint(unlisted))).toBe(0);
    p.close();
    q.close();
    await redis.del(keys.endpoint(id));
  });

  it("publishes the relay's own record (URLs, region, counts) with a TTL", async () => {
    const info = await redis.hgetall(keys.relayInfo(a.relay.relayId));
    expect(info).toMatchObject({ publicUrl: a.relay.wsUrl, internalUrl: a.relay.internalUrl, region: "us" });
    expect(await redis.raw.ttl(keys.relayInfo(a.relay.relayId))).toBeGreaterThan(0);
  });

  it("lists the relay's public URL as alive until one TTL ahead, and unlists it the moment it drains", async () => {
    const c = await startTestRelay({ PRESENCE_TTL_SECONDS: "5" });
    const url = normaliseRelayUrl(c.relay.wsUrl);
    await expect.poll(() => redis.raw.zscore(keys.relaysAlive(), url)).not.toBeNull();
    const aliveUntil = Number(await redis.raw.zscore(keys.relaysAlive(), url));
    expect(aliveUntil).toBeGreaterThan(Date.now() + 3_000);
    expect(aliveUntil).toBeLessThanOrEqual(Date.now() + 5_000);
    // close() drains first: the entry goes before the sockets do, so the API stops sending devices.
    const closing = c.close();
    await expect.poll(() => redis.raw.zscore(keys.relaysAlive(), url), { interval: 20 }).toBeNull();
    expect(c.relay.state.draining).toBe(true);
    await closing;
    expect(await redis.raw.zscore(keys.relaysAlive(), url)).toBeNull();
  });

  it("a relay whose host clock runs two hours ahead accepts the API's fresh tokens, stamps presence and liveness with Redis's clock, and sweeps no other relay's devices", async () => {
    const ahead = await startTestRelay({}, { now: () => Date.now() + 2 * 3600_000 });
    // A device another relay refreshed just now, by the right clock.
    const elsewhere = `agent_${randomHex(8)}`;
    await redis.raw.zadd(keys.onlineDevices(), Date.now(), elsewhere);
    try {
      const id = ahead.newDeviceId();
      // A token as the API signs it now: by this host's clock it expired an hour ago.
      const peer = await connectPeer({ url: ahead.relay.wsUrl, token: await ahead.token(id) });
      await peer.waitFor("connected");
      await expect.poll(() => redis.raw.zscore(keys.onlineDevices(), id)).not.toBeNull();
      expect(Number(await redis.raw.zscore(keys.onlineDevices(), id))).toBeLessThan(Date.now() + 5_000);
      expect(await redis.raw.zscore(keys.onlineDevices(), elsewhere)).not.toBeNull();
      const aliveUntil = Number(
        await redis.raw.zscore(keys.relaysAlive(), normaliseRelayUrl(ahead.relay.wsUrl)),
      );
      expect(aliveUntil).toBeLessThan(Date.now() + 60_000);
      expect(ahead.logs.join("\n")).toMatch(/this host's clock is 7200\.0 s ahead of Redis's/);
      peer.close();
    } finally {
      await redis.raw.zrem(keys.onlineDevices(), elsewhere);
      await ahead.close();
    }
  });

  it("a killed relay stops being handed out within three alive refreshes, long before its presence TTL", async () => {
    const relay = await startRelayProcess({
      RELAY_ID: `relay_alive_${randomHex(4)}`,
      PRESENCE_TTL_SECONDS: "30",
      PRESENCE_REFRESH_MS: "10000",
      RELAY_ALIVE_REFRESH_MS: "300",
    });
    const url = normaliseRelayUrl(relay.wsUrl);
    await expect.poll(() => redis.raw.zscore(keys.relaysAlive(), url)).not.toBeNull();
    // Renewed on its own cadence: still alive after several windows of 900 ms.
    await new Promise((r) => setTimeout(r, 2_000));
    expect(Number(await redis.raw.zscore(keys.relaysAlive(), url))).toBeGreaterThan(Date.now());
    await relay.stop("SIGKILL");
    const killedAt = Date.now();
    const aliveUntil = Number(await redis.raw.zscore(keys.relaysAlive(), url));
    console.log(`[measure] a SIGKILLed relay stays handed out ${aliveUntil - killedAt} ms after the kill`);
    expect(aliveUntil - killedAt).toBeLessThanOrEqual(900);
    await redis.raw.zrem(keys.relaysAlive(), url);
    await redis.del(keys.relayInfo(relay.relayId));
  });

  it("a relay killed without cleanup leaves presence that expires by itself within the TTL", async () => {
    const relay = await startRelayProcess({
      RELAY_ID: `relay_kill_${randomHex(4)}`,
      PRESENCE_TTL_SECONDS: "2",
      PRESENCE_REFRESH_MS: "500",
    });
    const id = `agent_${randomHex(8)}`;
    const token = await relay.token(id, { acct: "acct_kill" });
    const peer = await connectPeer({ url: relay.wsUrl, token });
    await peer.waitFor("connected");
    await expect.poll(async () => (await redis.hgetall(keys.presence(id))).relayId).toBe(relay.relayId);
    // Refreshed while alive: still there after more than one TTL.
    await new Promise((r) => setTimeout(r, 2_500));
    expect((await redis.hgetall(keys.presence(id))).relayId).toBe(relay.relayId);

    await relay.stop("SIGKILL");
    const killedAt = Date.now();
    expect((await redis.hgetall(keys.presence(id))).relayId).toBe(relay.relayId);
    await expect.poll(() => redis.hgetall(keys.presence(id)), { timeout: 5_000, interval: 100 }).toEqual({});
    const gone = Date.now() - killedAt;
    console.log(`[measure] presence of a SIGKILLed relay expired ${gone} ms after the kill (TTL 2 s)`);
    expect(gone).toBeLessThanOrEqual(3_000);
    // Its alive entry stays but has run out, so the API no longer hands its URL out.
    const aliveUntil = Number(await redis.raw.zscore(keys.relaysAlive(), normaliseRelayUrl(relay.wsUrl)));
    expect(aliveUntil).toBeGreaterThan(killedAt - 3_000);
    expect(aliveUntil).toBeLessThan(Date.now());
    // Readers ignore zset members older than the TTL; the next refresh by any relay sweeps them.
    const score = Number(await redis.raw.zscore(keys.onlineDevices(), id));
    expect(Date.now() - score).toBeGreaterThan(2_000);
    await redis.raw.zrem(keys.onlineDevices(), id);
    await redis.del(keys.relayInfo(relay.relayId));
  });
});

describe("the periodic presence refresh", () => {
  let c: TestRelay;
  beforeAll(async () => {
    c = await startTestRelay({ PRESENCE_REFRESH_MS: "300", PRESENCE_TTL_SECONDS: "5" });
  });
  afterAll(() => c?.close());

  /** Counts the relay's presence scripts (keep-alives, and full writes of `ids`); `fail` rejects a full write. */
  function countScripts(ids: string[], fail: (id: string) => boolean = () => false) {
    const redisOfRelay = c.relay.state.redis;
    const evalsha = redisOfRelay.evalsha;
    const counts = { keepalive: 0, full: 0, failed: 0 };
    redisOfRelay.evalsha = (sha, keyList, args) => {
      if (sha === presenceKeepalive.sha) counts.keepalive++;
      const id = ids.find((i) => keyList[0] === keys.presence(i));
      if (sha === presenceRefresh.sha && id) {
        counts.full++;
        if (fail(id)) {
          counts.failed++;
          return Promise.reject(new Error("injected: Redis refused the write"));
        }
      }
      return evalsha(sha, keyList, args);
    };
    const restore = () => {
      redisOfRelay.evalsha = evalsha;
    };
    return { counts, restore };
  }

  async function connected(n: number) {
    const ids = Array.from({ length: n }, () => c.newDeviceId());
    const peers = await Promise.all(
      ids.map(async (id) => connectPeer({ url: c.relay.wsUrl, token: await c.token(id) })),
    );
    await Promise.all(peers.map((p) => p.waitFor("connected")));
    for (const id of ids)
      await expect.poll(async () => (await redis.hgetall(keys.presence(id))).sockets).toBe("1");
    return { ids, peers };
  }

  it("keeps every device alive with one call per tick for all of them, not a full write per device", async () => {
    const { ids, peers } = await connected(3);
    const score = Number(await redis.raw.zscore(keys.onlineDevices(), ids[0]!));
    const { counts, restore } = countScripts(ids);
    try {
      await new Promise((r) => setTimeout(r, 1_000));
    } finally {
      restore();
    }
    // About three ticks of 300 ms, each one call for the three devices.
    expect(counts.keepalive).toBeGreaterThanOrEqual(2);
    expect(counts.keepalive).toBeLessThanOrEqual(5);
    expect(counts.full).toBe(0);
    for (const id of ids) {
      expect(Number(await redis.raw.zscore(keys.onlineDevices(), id))).toBeGreaterThan(score);
      expect(await redis.raw.pttl(keys.presence(id))).toBeGreaterThan(4_000);
      expect(await redis.hgetall(keys.presence(id))).toMatchObject({
        relayId: c.relay.relayId,
        sockets: "1",
      });
    }
    for (const p of peers) p.close();
  });

  it("writes a device in full again when Redis lost its presence, or it names another relay", async () => {
    const { ids, peers } = await connected(2);
    const [lost, taken] = ids as [string, string];
    await redis.del(keys.presence(lost));
    await redis.raw.zrem(keys.onlineDevices(), lost);
    await redis.hset(keys.presence(taken), { relayId: "relay_elsewhere" });
    for (const id of ids)
      await expect
        .poll(() => redis.hgetall(keys.presence(id)), { timeout: 2_000 })
        .toMatchObject({ relayId: c.relay.relayId, relayInternal: c.relay.internalUrl, sockets: "1" });
    expect(await redis.raw.zscore(keys.onlineDevices(), lost)).not.toBeNull();
    for (const p of peers) p.close();
  });

  it("a full write that failed is made again in full at a later tick, not only kept alive", async () => {
    const { ids, peers } = await connected(1);
    const id = ids[0]!;
    // The second socket's write (and device_info's) fail: Redis keeps saying one socket.
    let failing = true;
    const { counts, restore } = countScripts(ids, () => failing);
    try {
      const second = await connectPeer({ url: c.relay.wsUrl, token: await c.token(id) });
      await second.waitFor("connected");
      peers.push(second);
      await expect.poll(() => counts.failed).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 700));
      expect((await redis.hgetall(keys.presence(id))).sockets).toBe("1");
      failing = false;
      await expect
        .poll(async () => (await redis.hgetall(keys.presence(id))).sockets, { timeout: 2_000 })
        .toBe("2");
    } finally {
      restore();
    }
    for (const p of peers) p.close();
  });
});
