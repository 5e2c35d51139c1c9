import { Redis as IORedis } from "ioredis";
import type { RedisClient } from "./redis.ts";

export interface TcpRedis extends RedisClient {
  /** The underlying client, for pipelines in long-lived processes; close() ends it. */
  raw: IORedis;
  close(): Promise<void>;
}

/** Redis over TCP for long-lived Node processes (Upstash speaks RESP over TLS too: use rediss://). */
export function tcpRedis(url: string): TcpRedis {
  const r = new IORedis(url, { maxRetriesPerRequest: 2, enableAutoPipelining: true, lazyConnect: false });
  // Without a listener ioredis logs every reconnect attempt as an unhandled error event.
  r.on("error", () => {});
  return {
    raw: r,
    ping: () => r.ping(),
    get: (key) => r.get(key),
    async set(key, value, opts = {}) {
      const args: (string | number)[] = [key, value];
      if (opts.pxMs !== undefined) args.push("PX", opts.pxMs);
      if (opts.nx) args.push("NX");
      return (await r.call("SET", ...args)) === "OK";
    },
    del: (...keys) => (keys.length ? r.del(...keys) : Promise.resolve(0)),
    incrBy: (key, by) => r.incrby(key, by),
    expire: async (key, seconds) => (await r.expire(key, seconds)) === 1,
    hgetall: (key) => r.hgetall(key),
    hset: (key, fields) => r.hset(key, fields),
    sadd: (key, ...members) => (members.length ? r.sadd(key, ...members) : Promise.resolve(0)),
    spop: (key, count) => r.spop(key, count),
    eval: (script, keys, args) => r.eval(script, keys.length, ...keys, ...args),
    evalsha: (sha, keys, args) => r.evalsha(sha, keys.length, ...keys, ...args),
    scriptLoad: async (script) => String(await r.script("LOAD", script)),
    async close() {
      await r.quit().catch(() => r.disconnect());
    },
  };
}
