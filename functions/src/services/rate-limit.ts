import { keys } from "../../../shared/keys.ts";
import { runScript } from "../../../shared/lua/script.ts";
import { rateLimit } from "../../../shared/lua/scripts.gen.ts";
import type { RedisClient } from "../../../shared/redis.ts";

export type RateDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

/**
 * Fixed-window limit in Redis: `limit` hits per `windowMs` per (scope, id). The window starts at
 * the first hit (the key expires windowMs later), so there is no burst of 2x at clock boundaries.
 */
export async function hitRateLimit(
  redis: Pick<RedisClient, "eval" | "evalsha">,
  scope: string,
  id: string,
  limit: number,
  windowMs: number,
): Promise<RateDecision> {
  const key = keys.rateLimit(scope, id, `${windowMs}ms`);
  const [allowed, , ttlMs] = (await runScript(redis, rateLimit, [key], [limit, windowMs])) as number[];
  if (allowed === 1) return { allowed: true };
  return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(Number(ttlMs) / 1000)) };
}
