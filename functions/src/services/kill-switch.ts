/**
 * The kill switch (DESIGN.md "Upkeep"): one Redis key that stops every autonomous loop (the guard,
 * the payout executor, the prober and the watchdog read it). Engaging is the safe direction, open to
 * an ops-agent (capped per hour); releasing is a human's decision. Every change is audited.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { keys } from "../../../shared/keys.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { appendAudit } from "./audit.ts";
import { type ApiKeyAccount, isHumanOperator } from "./auth.ts";
import { hitRateLimit } from "./rate-limit.ts";

/** How often one ops-agent key may engage the switch in an hour (a human is not capped). */
export const OPS_AGENT_ENGAGES_PER_HOUR = 10;

export interface KillSwitchState {
  engaged: boolean;
  /** who engaged it and when, as stored with the key */
  since: string | null;
}

export async function killSwitchState(redis: Pick<RedisClient, "get">): Promise<KillSwitchState> {
  const v = await redis.get(keys.killSwitch());
  return { engaged: Boolean(v), since: v ? String(v) : null };
}

export type KillSwitchChange =
  | { ok: true; state: KillSwitchState }
  | { ok: false; code: "human_only" }
  | { ok: false; code: "rate_limited"; cap: number; retryAfterSeconds: number };

/**
 * The one rule for who moves the switch, for the JSON route and the operators' page alike: anyone
 * admitted may engage (an ops-agent within its hourly cap); only a human operator releases.
 */
export async function changeKillSwitch(
  deps: { db: Queryable; redis: Pick<RedisClient, "get" | "set" | "del" | "eval" | "evalsha"> },
  input: { engaged: boolean; caller: ApiKeyAccount; now: Date; reason?: string },
): Promise<KillSwitchChange> {
  const human = isHumanOperator(input.caller);
  if (!input.engaged && !human) return { ok: false, code: "human_only" };
  if (!human) {
    const d = await hitRateLimit(
      deps.redis,
      "kill-switch",
      input.caller.apiKeyId,
      OPS_AGENT_ENGAGES_PER_HOUR,
      3_600_000,
    );
    if (!d.allowed)
      return {
        ok: false,
        code: "rate_limited",
        cap: OPS_AGENT_ENGAGES_PER_HOUR,
        retryAfterSeconds: d.retryAfterSeconds,
      };
  }
  const state = await setKillSwitch(deps, {
    engaged: input.engaged,
    actor: input.caller.apiKeyId,
    now: input.now,
    ...(input.reason ? { reason: input.reason } : {}),
  });
  return { ok: true, state };
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
