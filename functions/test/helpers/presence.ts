import { keys } from "../../../shared/keys.ts";
import { delistEndpoint } from "../../../shared/pool.ts";
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
