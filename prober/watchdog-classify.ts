// Whose fault a watchdog run's failures are: ours (self) or the exits' (fleet).
import type { GroupCheck, SelfCheck, WatchdogError } from "./watchdog-checks.ts";

/** Failures that say nothing about the exit: the gateway or our own key refused us. */
const OWN_SIDE: ReadonlySet<WatchdogError> = new Set([
  "gateway_unreachable",
  "proxy_auth_failed",
  "gateway_error",
]);

export type Classification =
  | { verdict: "clean" }
  | { verdict: "fleet"; failing: GroupCheck[] }
  | { verdict: "self"; reason: "self_check_failed" | "own_side_error" | "every_group_failed" };

/**
 * Whose fault a run's failures are. Self (the fleet cannot be judged from here) when the
 * self-check failed, when any group failed on our side of the wire (gateway down, key refused),
 * or when two or more groups were checked and every one failed. Otherwise each failing group is
 * a fleet failure. A single group that fails with the self-check passing is the fleet's.
 */
export function classifyWatchdog(results: readonly GroupCheck[], selfCheck: SelfCheck): Classification {
  if (!selfCheck.ok) return { verdict: "self", reason: "self_check_failed" };
  const failing = results.filter((r) => !r.ok);
  if (failing.some((r) => r.error !== undefined && OWN_SIDE.has(r.error)))
    return { verdict: "self", reason: "own_side_error" };
  if (results.length >= 2 && failing.length === results.length)
    return { verdict: "self", reason: "every_group_failed" };
  return failing.length > 0 ? { verdict: "fleet", failing } : { verdict: "clean" };
}
