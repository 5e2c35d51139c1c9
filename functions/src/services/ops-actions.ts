/**
 * Reversible operations actions an ops-agent (or a human operator) may take directly
 * (docs/adr/0018-ops-agent-actions-and-proposals.md): delist / relist a device, re-probe an exit,
 * pause / resume one autonomous loop. Each is audited; an ops-agent's are capped per hour per key
 * (settings.ops_agent_caps_per_hour).
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { ApiError } from "../../../shared/errors.ts";
import { keys } from "../../../shared/keys.ts";
import { delistEndpoint } from "../../../shared/pool.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { jobs } from "../jobs/registry.ts";
import { appendAudit } from "./audit.ts";
import { hitRateLimit } from "./rate-limit.ts";
import { getSetting } from "./settings.ts";
import { sharedNow } from "./shared-clock.ts";

export const OPS_ACTIONS = ["delist", "relist", "reprobe", "pause", "resume", "delete"] as const;
export type OpsAction = (typeof OPS_ACTIONS)[number];

/** The loops a pause can name: every cron job (the payouts job is also the payout executor), the prober, the watchdog. */
export const LOOPS = [...new Set([...jobs.map((j) => j.name), "prober", "watchdog"])] as [
  string,
  ...string[],
];

const DEFAULT_CAPS: Record<OpsAction, number> = {
  delist: 30,
  relist: 30,
  reprobe: 60,
  pause: 10,
  resume: 10,
  delete: 10,
};
const HOUR_MS = 3_600_000;

/**
 * Counts one action of an ops-agent key against its hourly cap; over it, a 429 naming the cap and
 * when it resets. Human operators are not capped (they are the brake), only audited.
 */
export async function spendOpsCap(
  deps: { db: Queryable; redis: Pick<RedisClient, "eval" | "evalsha">; now: () => Date },
  caller: { apiKeyId: string; human: boolean },
  action: OpsAction,
): Promise<void> {
  if (caller.human) return;
  const caps = await getSetting<Partial<Record<OpsAction, number>>>(deps.db, "ops_agent_caps_per_hour", {});
  const cap = Number.isInteger(caps[action]) ? Number(caps[action]) : DEFAULT_CAPS[action];
  const d = await hitRateLimit(deps.redis, `ops-${action}`, caller.apiKeyId, cap, HOUR_MS);
  if (d.allowed) return;
  const resetsAt = new Date(deps.now().getTime() + d.retryAfterSeconds * 1000).toISOString();
  throw new ApiError(
    "E_RATE_LIMITED",
    `an ops-agent key may ${action} at most ${cap} times per hour (settings.ops_agent_caps_per_hour.${action}); the window resets at ${resetsAt}`,
    { headers: { "Retry-After": String(d.retryAfterSeconds) }, details: { action, cap, resetsAt } },
  );
}

/** What an id names: a registered device, a modem exit, or nothing. */
export async function exitKind(db: Queryable, id: string): Promise<"device" | "modem" | null> {
  const { rows } = await db.query<{ kind: "device" | "modem" }>(
    `SELECT 'device' AS kind FROM devices WHERE id = $1
     UNION ALL SELECT 'modem' FROM modem_exits WHERE id = $1 AND deleted_at IS NULL LIMIT 1`,
    [id],
  );
  return rows[0]?.kind ?? null;
}

type Deps = { db: Queryable; redis: RedisClient; now: () => Date };

/** Takes a device off sale now and keeps it off (the listing cron honours ops:delisted) until relisted. */
export async function delistDevice(
  deps: Deps,
  actor: string,
  deviceId: string,
  reason?: string,
): Promise<void> {
  await deps.redis.hset(keys.opsDelisted(), { [deviceId]: `${actor} ${deps.now().toISOString()}` });
  await delistEndpoint(deps.redis, deviceId);
  await appendAudit(deps.db, {
    actor,
    action: "device.delist",
    subject: deviceId,
    detail: reason ? { reason } : {},
  });
}

/** Lifts an operations delist; the listing cron lists the device again if it passes the listing rule. */
export async function relistDevice(deps: Deps, actor: string, deviceId: string): Promise<boolean> {
  const removed = Number(
    await deps.redis.eval("return redis.call('HDEL', KEYS[1], ARGV[1])", [keys.opsDelisted()], [deviceId]),
  );
  if (removed > 0)
    await appendAudit(deps.db, { actor, action: "device.relist", subject: deviceId, detail: {} });
  return removed > 0;
}

/** Makes an exit's next probe due now (the prober claims it on its next tick). */
export async function reprobe(deps: Deps, actor: string, id: string): Promise<void> {
  // Due by Redis's clock, which the prober schedules by.
  await deps.redis.eval(
    "return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])",
    [keys.probeDue()],
    [String(await sharedNow(deps)), id],
  );
  await appendAudit(deps.db, { actor, action: "device.reprobe", subject: id, detail: {} });
}

/** Pauses or resumes one loop; answers whether it is paused now. Changes only are audited. */
export async function setLoopPaused(
  deps: Deps,
  input: { actor: string; loop: string; paused: boolean; reason?: string },
): Promise<{ paused: boolean; since: string | null }> {
  const key = keys.loopPaused(input.loop);
  const before = await deps.redis.get(key);
  if (input.paused && !before)
    await deps.redis.set(key, `paused by ${input.actor} at ${deps.now().toISOString()}`);
  if (!input.paused && before) await deps.redis.del(key);
  if (Boolean(before) !== input.paused)
    await appendAudit(deps.db, {
      actor: input.actor,
      action: input.paused ? "loop.pause" : "loop.resume",
      subject: input.loop,
      detail: {
        ...(input.reason ? { reason: input.reason } : {}),
        previously: before ? String(before) : null,
      },
    });
  const now = await deps.redis.get(key);
  return { paused: Boolean(now), since: now ? String(now) : null };
}
