/**
 * The kill switch (DESIGN.md "Upkeep"): one Redis key that stops every autonomous loop (the guard,
 * the payout executor, the prober and the watchdog read it). Engaging is the safe direction, open to
 * an ops-agent (capped per hour); releasing is a human's decision. Every change is audited.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { keys } from "../../../shared/keys.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";

export interface KillSwitchState {
  engaged: boolean;
  /** who engaged it and when, as stored with the key */
  since: string | null;
}

export async function killSwitchState(redis: Pick<RedisClient, "get">): Promise<KillSwitchState> {
  const v = await redis.get(keys.killSwitch());
  return { engaged: Boolean(v), since: v ? String(v) : null };
}

/** Sets the switch; the Redis write comes first when engaging (stopping must not wait on Postgres). */
export async function setKillSwitch(
  deps: { db: Queryable; redis: Pick<RedisClient, "get" | "set" | "del"> },
  input: { engaged: boolean; actor: string; now: Date; reason?: string },
): Promise<KillSwitchState> {
  const before = await killSwitchState(deps.redis);
  if (input.engaged) {
    // Not JSON on purpose: the Upstash client would parse JSON values back into objects.
    if (!before.engaged)
      await deps.redis.set(keys.killSwitch(), `engaged by ${input.actor} at ${input.now.toISOString()}`);
  } else if (before.engaged) {
    await deps.redis.del(keys.killSwitch());
  }
  if (before.engaged !== input.engaged)
    await appendAudit(deps.db, {
      actor: input.actor,
      action: input.engaged ? "kill_switch.engage" : "kill_switch.release",
      subject: "kill_switch",
      detail: { ...(input.reason ? { reason: input.reason } : {}), previously: before.since },
    });
  return killSwitchState(deps.redis);
}
