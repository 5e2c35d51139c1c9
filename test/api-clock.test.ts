// The API reads and writes times that other processes keep by Redis's clock (docs/adr/0031):
// relays stamp presence and their own liveness with it, the prober schedules probes by it, and
// relays check a peer token's expiry by it. These tests run the API's own code (the listing job,
// registration, a re-probe) with its clock (`deps.now`, the Worker's Date) an hour fast and an
// hour slow, against real Redis (a Redis of this file's own, through the Upstash REST bridge the
// API uses) and Postgres. On the API's own clock: an hour fast it delisted every device the relays
// called online, saw no relay alive and set a re-probe an hour out; an hour slow it issued peer
// tokens every relay found expired and kept a device that had left listed for an hour.
//
// Not inside workerd: the prober's skew test preloads libfaketime, but libfaketime deadlocks
// workerd at start (its lazy symbol lookup allocates inside tcmalloc's lock), so the clock is
// moved where the API reads it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../functions/src/config.ts";
import type { Deps } from "../functions/src/deps.ts";
import { listingJob } from "../functions/src/jobs/listing.ts";
import { type RelayRegions, registerDevice } from "../functions/src/services/devices.ts";
import { reprobe } from "../functions/src/services/ops-actions.ts";
import { getSetting } from "../functions/src/services/settings.ts";
import { markOnline } from "../functions/test/helpers/presence.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { runScript } from "../shared/lua/script.ts";
import { relayAlive } from "../shared/lua/scripts.gen.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { upstashRedis } from "../shared/redis.ts";
import { normaliseRelayUrl } from "../shared/relay-url.ts";
import { stateVars } from "./helpers/api.ts";
import { ownRedisState } from "./helpers/env.ts";

const HOUR = 3_600_000;

// A Redis of its own: this file runs the listing job, which would delist what other files list.
const state = await ownRedisState("api-clock");
const e = state.env;
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
let redis: TcpRedis;
beforeAll(() => {
  redis = tcpRedis(e.REDIS_URL);
});
afterAll(async () => {
  await redis?.close();
  await db.end();
  await state.stop();
});

/** What a Worker request gets (functions/src/deps.ts), on a host whose clock is `offsetMs` off. */
function apiDeps(offsetMs: number): Deps {
  return {
    config: loadConfig(stateVars(e)),
    // Its own client: the API keeps Redis's clock offset per client, and this one's clock is off.
    redis: upstashRedis(e.UPSTASH_REDIS_REST_URL, e.UPSTASH_REDIS_REST_TOKEN),
    db,
    now: () => new Date(Date.now() + offsetMs),
  };
}

const redisNowMs = () => redis.time();
const isListed = async (id: string) =>
  Number(await redis.eval("return redis.call('SISMEMBER', KEYS[1], ARGV[1])", [keys.poolListed()], [id])) ===
  1;

/** A device its relay called online at `stampedAt` (Redis's clock) and the prober verified. */
async function verifiedDevice(
  stampedAt: number,
  country = `x${"abcdefghij"[Math.floor(Math.random() * 10)]}`,
) {
  const id = `agent_${randomHex(8)}`;
  await markOnline(redis, id, country, stampedAt);
  await redis.hset(keys.probe(id), { verified: "1", speedTier: "fast", passStreak: "2", failStreak: "0" });
  return { id, country };
}

/** Registers a device as POST /v1/peer/agents/register does; the peer token's claims. */
async function register(deps: Deps, country: string) {
  const supplier = await createAccountWithKey(db, { name: `clock-${randomHex(4)}`, kind: "supplier" });
  const got = await registerDevice(
    deps,
    { apiKey: supplier.apiKey, name: `clock-${randomHex(4)}`, type: "custom", country },
    { ip: "127.0.0.1" },
  );
  if (!got.ok) throw new Error(`registration refused: ${got.code} ${got.message}`);
  const claims = JSON.parse(Buffer.from(got.jwt.split(".")[1]!, "base64url").toString()) as {
    iat: number;
    exp: number;
  };
  return { ...got, claims };
}

/** The token's expiry against Redis's clock, in seconds past its now (a relay refuses <= 0). */
async function lifeLeft(claims: { exp: number }) {
  return claims.exp - (await redisNowMs()) / 1000;
}

describe("the API on a host an hour fast stamps and reads shared deadlines by Redis's clock", () => {
  const deps = apiDeps(HOUR);

  it("the listing job lists a device the relays call online, not finding its presence an hour old", async () => {
    const { id } = await verifiedDevice(await redisNowMs());
    await listingJob.run(deps);
    expect(await isListed(id)).toBe(true);
  });

  it("registration picks the relay that is alive, and the token lives an hour by Redis's clock", async () => {
    const cfg = await getSetting<RelayRegions>(db, "relay_regions", { default: "", regions: {} });
    const [preferred, other] = Object.values(cfg.regions);
    if (!preferred || !other) throw new Error("relay_regions needs two regions for this test");
    // Only the other region's relay is alive, listed for 9 s from Redis's now as relays do.
    const now = await redisNowMs();
    await runScript(
      redis,
      relayAlive,
      [keys.relaysAlive()],
      [normaliseRelayUrl(other.relayUrl), now + 9_000, 0],
    );
    await runScript(redis, relayAlive, [keys.relaysAlive()], [normaliseRelayUrl(preferred.relayUrl), 0, 0]);
    const got = await register(deps, preferred.countries[0]!);
    expect(got.relay).toBe(other.relayUrl);
    expect(Math.abs(got.claims.iat - now / 1000)).toBeLessThan(30);
    expect(Math.abs((await lifeLeft(got.claims)) - 3600)).toBeLessThan(30);
  });

  it("a re-probe is due now by Redis's clock, not an hour out", async () => {
    const id = `agent_${randomHex(8)}`;
    await reprobe(deps, "test", id);
    const due = Number(
      await redis.eval("return redis.call('ZSCORE', KEYS[1], ARGV[1])", [keys.probeDue()], [id]),
    );
    expect(due).toBeGreaterThan(0);
    expect(due).toBeLessThanOrEqual(await redisNowMs());
  });
});

describe("the API on a host an hour slow", () => {
  const deps = apiDeps(-HOUR);

  it("issues peer tokens that expire an hour after Redis's now, not at it", async () => {
    const got = await register(deps, "US");
    expect(Math.abs((await lifeLeft(got.claims)) - 3600)).toBeLessThan(30);
  });

  it("the listing job delists a device whose relay stopped refreshing it two minutes ago", async () => {
    const { id, country } = await verifiedDevice(await redisNowMs());
    await listingJob.run(deps);
    expect(await isListed(id)).toBe(true);
    // Presence is fresh for 30 s; this one's last refresh was two minutes ago by Redis's clock.
    await markOnline(redis, id, country, (await redisNowMs()) - 120_000);
    await listingJob.run(deps);
    expect(await isListed(id)).toBe(false);
  });
});
