import { Redis as Upstash } from "@upstash/redis";

/**
 * The narrow Redis surface every process uses. The Worker gets it over Upstash REST; long-lived
 * Node processes over TCP (shared/redis.node.ts). Anything non-trivial lives in Lua scripts.
 */
export interface RedisClient {
  ping(): Promise<string>;
  /** Redis's clock (TIME), in ms since the epoch: the one clock shared deadlines use (shared/clock.ts). */
  time(): Promise<number>;
  get(key: string): Promise<string | null>;
  set(key: string, value: string, opts?: { pxMs?: number; nx?: boolean }): Promise<boolean>;
  del(...keys: string[]): Promise<number>;
  incrBy(key: string, by: number): Promise<number>;
  expire(key: string, seconds: number): Promise<boolean>;
  hgetall(key: string): Promise<Record<string, string>>;
  hset(key: string, fields: Record<string, string>): Promise<number>;
  sadd(key: string, ...members: string[]): Promise<number>;
  /** Removes and returns up to count random members. */
  spop(key: string, count: number): Promise<string[]>;
  eval(script: string, keys: string[], args: string[]): Promise<unknown>;
  evalsha(sha: string, keys: string[], args: string[]): Promise<unknown>;
  scriptLoad(script: string): Promise<string>;
}

/** Redis over the Upstash REST protocol (production Upstash, or dev/upstash-rest.ts locally). */
export function upstashRedis(url: string, token: string): RedisClient {
  // automaticDeserialization would JSON.parse every string reply: we want raw strings.
  const r = new Upstash({ url, token, automaticDeserialization: false, enableTelemetry: false });
  return {
    ping: () => r.ping(),
    time: async () => timeMs(await r.time()),
    get: (key) => r.get<string>(key),
    async set(key, value, opts = {}) {
      const res =
        opts.pxMs !== undefined
          ? opts.nx
            ? await r.set(key, value, { px: opts.pxMs, nx: true })
            : await r.set(key, value, { px: opts.pxMs })
          : opts.nx
            ? await r.set(key, value, { nx: true })
            : await r.set(key, value);
      return res === "OK";
    },
    del: (...keys) => r.del(...keys),
    incrBy: (key, by) => r.incrby(key, by),
    expire: async (key, seconds) => (await r.expire(key, seconds)) === 1,
    async hgetall(key) {
      // With automaticDeserialization off the client hands back Redis's flat [field, value, ...].
      const reply = (await r.hgetall(key)) as unknown;
      if (!Array.isArray(reply)) return (reply as Record<string, string> | null) ?? {};
      const out: Record<string, string> = {};
      for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
      return out;
    },
    hset: (key, fields) => r.hset(key, fields),
    sadd: (key, ...members) =>
      members.length ? r.sadd(key, members[0]!, ...members.slice(1)) : Promise.resolve(0),
    spop: async (key, count) => ((await r.spop<string[]>(key, count)) ?? []).map(String),
    eval: (script, keys, args) => r.eval(script, keys, args),
    evalsha: (sha, keys, args) => r.evalsha(sha, keys, args),
    scriptLoad: (script) => r.scriptLoad(script),
  };
}

/** TIME's [seconds, microseconds] as ms since the epoch (fractional). */
export function timeMs(reply: readonly (string | number)[]): number {
  return Number(reply[0]) * 1000 + Number(reply[1]) / 1000;
}
