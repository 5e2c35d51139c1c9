/**
 * Redis's clock, for what the API reads or writes in deadlines other processes sweep by (ADR 0031).
 *
 * Relays stamp presence and their own liveness with Redis's clock, the prober schedules probes by
 * it, and relays check a peer token's expiry by it. An API host whose clock is off would read
 * those against its own: an hour fast, it finds every device's presence an hour old and delists
 * the lot, sees no relay alive, and sets a reprobe an hour out; an hour slow, it issues peer tokens
 * that every relay already finds expired. So the API uses Redis's time for these, measured once a
 * minute per isolate (one TIME round trip) and read locally otherwise, as long-lived processes do
 * with shared/clock.ts (whose timer a Worker cannot keep).
 *
 * Dates kept in Postgres (refresh tokens, sessions) stay on the API's clock. A credential's
 * `expiresAt` does too, though gateways check it by Redis's: it is days long, so a skewed API
 * host moves it by its skew (ADR 0031).
 */
import type { RedisClient } from "../../../shared/redis.ts";
import type { Deps } from "../deps.ts";

const RESYNC_MS = 60_000;

/** Per Redis client (deps.ts keeps one per database per isolate): the offset and when it was taken. */
const measured = new WeakMap<Pick<RedisClient, "time">, { offsetMs: number; atMs: number }>();

/**
 * Redis's time now in ms, as this isolate estimates it from its own clock (`deps.now`). When Redis
 * does not answer, the last offset measured (or none): the callers' Redis calls would fail the
 * same way. The offset is kept per Redis client, so one client serves one clock.
 */
export async function sharedNow(deps: Pick<Deps, "redis" | "now">): Promise<number> {
  const { redis } = deps;
  const local = () => deps.now().getTime();
  const last = measured.get(redis);
  if (last && local() - last.atMs < RESYNC_MS) return Math.round(local() + last.offsetMs);
  const sent = local();
  try {
    const server = await redis.time();
    const back = local();
    // Taken at the round trip's midpoint: the answer was read somewhere in between.
    measured.set(redis, { offsetMs: server - (sent + back) / 2, atMs: back });
  } catch {
    // Kept as it was; measured again on the next call.
  }
  return Math.round(local() + (measured.get(redis)?.offsetMs ?? 0));
}
