import { createPool, type Pool } from "../../shared/db/pool.ts";
import { type RedisClient, upstashRedis } from "../../shared/redis.ts";
import type { Config } from "./config.ts";

/** What services get instead of reaching for globals: config, state clients, and the clock. */
export interface Deps {
  config: Config;
  redis: RedisClient;
  /** A Pool for this request; created on first use and ended after the response. */
  readonly db: Pool;
  now(): Date;
}

const redisByUrl = new Map<string, RedisClient>();

export function createDeps(config: Config): { deps: Deps; dispose(): Promise<void> } {
  let pool: Pool | undefined;
  const key = `${config.UPSTASH_REDIS_REST_URL}\n${config.UPSTASH_REDIS_REST_TOKEN}`;
  let redis = redisByUrl.get(key);
  if (!redis) {
    redis = upstashRedis(config.UPSTASH_REDIS_REST_URL, config.UPSTASH_REDIS_REST_TOKEN);
    redisByUrl.set(key, redis);
  }
  const deps: Deps = {
    config,
    redis,
    get db() {
      // Workers may not reuse I/O objects across requests, so each request gets its own Pool.
      pool ??= createPool(config.DATABASE_URL, config.NEON_WS_PROXY);
      return pool;
    },
    now: () => new Date(),
  };
  return {
    deps,
    async dispose() {
      if (pool) await pool.end().catch(() => {});
    },
  };
}
