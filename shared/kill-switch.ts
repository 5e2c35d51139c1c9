/**
 * The kill switch as the long-lived loops read it (the prober, the fleet watchdog); the API's jobs
 * read the same key through functions/src/jobs/guard.ts. One Redis key: ops:kill_switch.
 */
import type { Queryable } from "./db/pool.ts";
import { keys } from "./keys.ts";
import type { RedisClient } from "./redis.ts";

/** True while the kill switch is engaged. `key` is for tests that must not stop other files' loops. */
export async function killSwitchEngaged(
  redis: Pick<RedisClient, "get"> | Pick<RedisClient, "eval">,
  key = keys.killSwitch(),
): Promise<boolean> {
  const value =
    "get" in redis ? await redis.get(key) : await redis.eval("return redis.call('GET', KEYS[1])", [key], []);
  return Boolean(value);
}

/** Records that `loop` stopped acting because of the kill switch, as the guard does for the crons. */
export async function recordKillSwitchSkip(db: Queryable | null, loop: string): Promise<void> {
  await db
    ?.query("INSERT INTO job_runs (job, finished_at, status, detail) VALUES ($1, now(), 'skipped', $2)", [
      loop,
      JSON.stringify({ reason: "kill_switch" }),
    ])
    .catch(() => {}); // Postgres down must not keep a stopped loop from staying stopped
}

/**
 * Why `loop` must not act now: the kill switch (everything stops), a pause of this loop alone
 * (ADR 0018, keys.loopPaused), or null. `killKey` and `pauseKey` are for tests, as in killSwitchEngaged.
 */
export async function loopStopped(
  redis: Pick<RedisClient, "get"> | Pick<RedisClient, "eval">,
  loop: string,
  killKey = keys.killSwitch(),
  pauseKey = keys.loopPaused(loop),
): Promise<"kill_switch" | "paused" | null> {
  if (await killSwitchEngaged(redis, killKey)) return "kill_switch";
  return (await killSwitchEngaged(redis, pauseKey)) ? "paused" : null;
}

/** Records that `loop` stopped acting (kill switch or pause), as the guard does for the crons. */
export async function recordLoopSkip(
  db: Queryable | null,
  loop: string,
  reason: "kill_switch" | "paused",
): Promise<void> {
  await db
    ?.query("INSERT INTO job_runs (job, finished_at, status, detail) VALUES ($1, now(), 'skipped', $2)", [
      loop,
      JSON.stringify({ reason }),
    ])
    .catch(() => {});
}
