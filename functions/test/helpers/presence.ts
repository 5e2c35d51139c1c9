import { keys } from "../../../shared/keys.ts";
import { applyListings, delistEndpoint } from "../../../shared/pool.ts";
import type { RedisClient } from "../../../shared/redis.ts";

/** Marks `id` online in `country` as a relay's presence refresh does (relay "relay-test" on loopback). */
export async function markOnline(
  redis: Pick<RedisClient, "hset" | "eval">,
  id: string,
  country: string,
  now = Date.now(),
) {
  await redis.hset(keys.presence(id), {
    relayId: "relay-test",
    relayInternal: "http://127.0.0.1:1",
    sockets: "4",
    ipType: "residential",
    country: country.toUpperCase(),
  });
  await redis.eval(
    "return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])",
    [keys.onlineDevices()],
    [String(now), id],
  );
}

/** Undoes markOnline and any listing of `id`: no test endpoint stays in the shared pool for another file to pick. */
export async function forgetDevice(redis: RedisClient, id: string) {
  await delistEndpoint(redis, id);
  await redis.del(keys.presence(id), keys.probe(id));
  await redis.eval("return redis.call('ZREM', KEYS[1], ARGV[1])", [keys.onlineDevices()], [id]);
}

export interface OnlineDevice {
  id: string;
  country: string;
  /** probe state to write beside the presence (verified, speedTier, ...) */
  probe?: Record<string, string>;
}

/**
 * markOnline (and the probe hash) for thousands of devices, a few hundred per round trip: a test of
 * the cron at fleet size would otherwise spend its time seeding.
 */
export async function markManyOnline(
  redis: Pick<RedisClient, "eval">,
  devices: OnlineDevice[],
  now = Date.now(),
) {
  // KEYS: presence:online, then per device presence:{id}, probe:{id}. ARGV: now, then per device
  // id, country, n, n probe field/value strings.
  const seed = `
    local a = 2
    for i = 2, #KEYS, 2 do
      local id, country, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
      redis.call("HSET", KEYS[i], "relayId", "relay-test", "relayInternal", "http://127.0.0.1:1",
        "sockets", "4", "ipType", "residential", "country", country)
      redis.call("ZADD", KEYS[1], ARGV[1], id)
      redis.call("DEL", KEYS[i + 1])
      if n > 0 then redis.call("HSET", KEYS[i + 1], unpack(ARGV, a + 3, a + 2 + n)) end
      a = a + 3 + n
    end`;
  for (let i = 0; i < devices.length; i += 500) {
    const batch = devices.slice(i, i + 500);
    const args = [String(now)];
    for (const d of batch) {
      const probe = Object.entries(d.probe ?? {}).flat();
      args.push(d.id, d.country.toUpperCase(), String(probe.length), ...probe);
    }
    await redis.eval(
      seed,
      [keys.onlineDevices(), ...batch.flatMap((d) => [keys.presence(d.id), keys.probe(d.id)])],
      args,
    );
  }
}

/** forgetDevice for many devices. */
export async function forgetDevices(redis: RedisClient, ids: string[]) {
  await applyListings(
    redis,
    ids.map((endpointId) => ({ action: "delist", endpointId })),
  );
  for (let i = 0; i < ids.length; i += 500) {
    const batch = ids.slice(i, i + 500);
    await redis.del(...batch.flatMap((id) => [keys.presence(id), keys.probe(id)]));
    await redis.eval("return redis.call('ZREM', KEYS[1], unpack(ARGV))", [keys.onlineDevices()], batch);
  }
}
