/**
 * Fleet watchdog: a synthetic customer. Every WATCHDOG_INTERVAL_MS it buys one small HTTPS body
 * through the gateway for each listed (pool, country) group, the way a customer does: HTTP CONNECT
 * to the gateway's customer port with a real pool key (username `psx_<account>-<pool>-<country>`),
 * TLS to the probe target inside the tunnel, GET, read the whole body. Beside that it runs a
 * self-check that does not depend on the fleet (TCP to the gateway port; the target fetched
 * directly), so "my own vantage point is broken" (self) can be told from "this country/pool is
 * broken" (fleet). Every check is a row in Postgres `watchdog_checks`; sustained failures become
 * rows in `alerts`. It reads `pool_rollup` (and, optionally, its own key's tier from Redis) and
 * writes nothing else: it never restarts, delists or pauses anything.
 *
 * The parts: `watchdog-checks.ts` (one check over the wire: CONNECT through the gateway, TLS,
 * GET), `watchdog-classify.ts` (whose fault a run's failures are), `watchdog-alerts.ts` (rows in
 * `watchdog_checks` and `alerts`); this file holds the configuration, one run, and the schedule.
 */
import { createHash } from "node:crypto";
import type { Queryable } from "../shared/db/pool.ts";
import { formatUsername } from "../shared/dsl.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { loopStopped, recordLoopSkip } from "../shared/kill-switch.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { HourlyCap } from "../shared/loop-cap.ts";
import type { RedisClient } from "../shared/redis.ts";
import type { ProberConfig } from "./config.ts";
import { countWatchdogCheck, type ProberMetrics } from "./metrics.ts";
import type { ProbeTargetConfig } from "./probe.ts";
import { type AlertChange, countBy, summary, watchdogAlerts } from "./watchdog-alerts.ts";
import {
  fetchOver,
  type GroupCheck,
  type GroupPool,
  proxyConnect,
  type SelfCheck,
  tcpConnect,
  timed,
  type WatchdogGroup,
} from "./watchdog-checks.ts";
import { type Classification, classifyWatchdog } from "./watchdog-classify.ts";

// The parts, for callers that knew them here.
export type { AlertChange, AlertKind } from "./watchdog-alerts.ts";
export {
  type CheckResult,
  connectFailure,
  type GroupCheck,
  type GroupPool,
  type SelfCheck,
  WATCHDOG_ERRORS,
  type WatchdogError,
  type WatchdogGroup,
} from "./watchdog-checks.ts";
export { type Classification, classifyWatchdog } from "./watchdog-classify.ts";

export interface WatchdogConfig {
  /** the gateway's customer HTTP port, e.g. http://127.0.0.1:7000 */
  proxyUrl: string;
  /** psx_<account> of a real pool key */
  username: string;
  /** its pak_ secret */
  password: string;
  target: ProbeTargetConfig;
  intervalMs: number;
  failsToAlert: number;
  timeoutMs: number;
  concurrency: number;
  bytes: number;
  /** "<pool>-<country>" scopes to check; undefined = every listed group */
  groups?: readonly string[];
  /** runaway cap: scheduled runs per UTC hour (default 120); past it the schedule records run_cap */
  maxRunsPerHour?: number;
}

/** The watchdog's settings from the prober's config, or why it stays off. Never echoes secrets. */
export function watchdogConfigFrom(
  config: ProberConfig,
  target: ProbeTargetConfig,
): { on: true; config: WatchdogConfig } | { on: false; reason: string } {
  if (!config.WATCHDOG_PROXY_URL || !config.WATCHDOG_USERNAME || !config.WATCHDOG_PASSWORD)
    return { on: false, reason: "WATCHDOG_PROXY_URL, WATCHDOG_USERNAME and WATCHDOG_PASSWORD not set" };
  if (!config.DATABASE_URL)
    return { on: false, reason: "DATABASE_URL not set (checks and alerts live there)" };
  return {
    on: true,
    config: {
      proxyUrl: new URL(config.WATCHDOG_PROXY_URL).origin,
      username: config.WATCHDOG_USERNAME,
      password: config.WATCHDOG_PASSWORD,
      target,
      intervalMs: config.WATCHDOG_INTERVAL_MS,
      failsToAlert: config.WATCHDOG_FAILS_TO_ALERT,
      timeoutMs: config.WATCHDOG_TIMEOUT_MS,
      concurrency: config.WATCHDOG_CONCURRENCY,
      bytes: config.WATCHDOG_BYTES,
      maxRunsPerHour: config.WATCHDOG_MAX_RUNS_PER_HOUR,
      ...(config.WATCHDOG_GROUPS ? { groups: config.WATCHDOG_GROUPS } : {}),
    },
  };
}

export interface WatchdogRun {
  runAt: Date;
  self: SelfCheck;
  checks: GroupCheck[];
  classification: Classification;
  opened: AlertChange[];
  resolved: AlertChange[];
  durationMs: number;
}

export interface WatchdogDeps {
  db: Queryable;
  /** read-only: lets the watchdog see its key's tier and skip pools the key cannot reach */
  redis?: Pick<RedisClient, "get" | "hgetall">;
  now?: () => number;
  onRun?: (run: WatchdogRun) => void;
  /** Structured log (default: JSON lines on stdout, warnings and errors only). */
  log?: Logger;
  /** the prober's registry: each check counted by result and pool (prober_watchdog_checks_total) */
  metrics?: ProberMetrics;
  /** the kill switch's Redis key; tests pass their own so they stop no one else's loops */
  killSwitchKey?: string;
  /** this loop's pause key (keys.loopPaused); tests pass their own, like killSwitchKey */
  pauseKey?: string;
}

export interface RunningWatchdog {
  /** one full run (checks, rows, alerts); runs never overlap */
  runOnce(): Promise<WatchdogRun>;
  /** stops the schedule and waits for a run in flight */
  stop(): Promise<void>;
}

const scopeOf = (g: WatchdogGroup) => `${g.pool}-${g.country}`;

/** Starts the schedule (first run one interval after start); see the file header for what it does. */
export function startWatchdog(config: WatchdogConfig, deps: WatchdogDeps): RunningWatchdog {
  const now = deps.now ?? Date.now;
  const log = (deps.log ?? createLogger({ service: "prober", level: "warn" })).child({ loop: "watchdog" });
  const proxy = new URL(config.proxyUrl);
  const proxyAddr = { host: proxy.hostname.replace(/^\[|\]$/g, ""), port: Number(proxy.port || 80) };
  const selfScope = proxy.origin;
  const account = config.username.slice("psx_".length);
  const only = config.groups ? new Set(config.groups) : undefined;
  // Consecutive failed runs per scope, in memory: open alerts live in Postgres and survive a
  // restart; a restart only delays a new alert by up to failsToAlert - 1 runs.
  const fleetStreaks = new Map<string, number>();
  let selfStreak = 0;
  let tierNoted = "";

  async function reachablePools(): Promise<readonly GroupPool[]> {
    if (!deps.redis) return ["mbl", "peer"];
    const hash = createHash("sha256").update(config.password).digest("hex");
    const keyId = await deps.redis.get(keys.credentialSecret(hash));
    const tier = keyId ? (await deps.redis.hgetall(keys.credential(keyId))).tier : undefined;
    // A key sold for one pool routes only to that pool (gateway-node/auth.ts): checking the other
    // pool with it would silently measure the wrong exits.
    if (tier === "mbl" || tier === "peer") {
      if (tierNoted !== tier) log.info({ tier }, `the key's tier is ${tier}: checking pool ${tier} only`);
      tierNoted = tier;
      return [tier];
    }
    return ["mbl", "peer"];
  }

  async function groupsToCheck(pools: readonly GroupPool[]): Promise<WatchdogGroup[]> {
    const { rows } = await deps.db.query<{ pool: GroupPool; country: string }>(
      "SELECT pool, country FROM pool_rollup WHERE listed > 0 AND pool = ANY($1::text[]) ORDER BY pool, country",
      [pools],
    );
    return rows
      .map((r) => ({ pool: r.pool, country: r.country }))
      .filter((g) => /^[a-z]{2}$/.test(g.country) && (!only || only.has(scopeOf(g))));
  }

  async function checkGroup(g: WatchdogGroup): Promise<GroupCheck> {
    const requestId = `wd_${randomHex(8)}`;
    const username = formatUsername({ account, pool: g.pool, country: g.country });
    const authorization = `Basic ${Buffer.from(`${username}:${config.password}`).toString("base64")}`;
    const result = await timed(config.timeoutMs, async (track, started) => {
      const opened = await proxyConnect(
        proxyAddr,
        config.target,
        { authorization, requestId },
        track,
        config.timeoutMs,
      );
      if (!opened.ok) return opened;
      return fetchOver(opened.socket, config.target, config.bytes, track, started);
    });
    return { ...g, requestId, ...result };
  }

  async function selfCheck(): Promise<SelfCheck> {
    const [gateway, target] = await Promise.all([
      timed(config.timeoutMs, async (track, started) => {
        const c = await tcpConnect(proxyAddr, track);
        if (!c.ok) return { ok: false, error: "gateway_unreachable", detail: c.detail };
        c.socket.destroy();
        return { ok: true, latencyMs: Math.round(performance.now() - started) };
      }),
      timed(config.timeoutMs, async (track, started) => {
        const c = await tcpConnect(config.target, track);
        if (!c.ok) return { ok: false, error: "target_unreachable", detail: c.detail };
        return fetchOver(c.socket, config.target, config.bytes, track, started);
      }),
    ]);
    return { ok: gateway.ok && target.ok, gateway, target };
  }

  const { record, failing, resolve, resolveUnlisted } = watchdogAlerts(deps.db, {
    failsToAlert: config.failsToAlert,
    proxyScope: selfScope,
    ...(config.groups ? { groups: config.groups } : {}),
  });

  async function run(): Promise<WatchdogRun> {
    const started = performance.now();
    const runAt = new Date(now());
    const pools = await reachablePools();
    const groups = await groupsToCheck(pools);
    const [self, checks] = await Promise.all([selfCheck(), mapLimit(groups, config.concurrency, checkGroup)]);
    const classification = classifyWatchdog(checks, self);
    await record(runAt, self, checks);

    const opened: AlertChange[] = [];
    const resolved: AlertChange[] = [];
    const add = (into: AlertChange[], c: AlertChange | AlertChange[] | undefined) => {
      if (Array.isArray(c)) into.push(...c);
      else if (c) into.push(c);
    };
    if (classification.verdict === "self") {
      // Fleet streaks hold: this run says nothing about the exits.
      selfStreak++;
      const failed = checks.filter((c) => !c.ok);
      add(
        opened,
        await failing(
          "watchdog_self",
          selfScope,
          selfStreak,
          {
            reason: classification.reason,
            gateway: summary(self.gateway),
            target: summary(self.target),
            groupsChecked: checks.length,
            groupsFailed: failed.length,
            errors: countBy(failed.map((c) => c.error ?? "timeout")),
          },
          runAt,
        ),
      );
    } else {
      selfStreak = 0;
      add(resolved, await resolve("watchdog_self", selfScope, runAt));
      const checked = new Set<string>();
      for (const c of checks) {
        const scope = scopeOf(c);
        checked.add(scope);
        if (c.ok) {
          fleetStreaks.delete(scope);
          add(resolved, await resolve("watchdog_fleet", scope, runAt));
          continue;
        }
        const streak = (fleetStreaks.get(scope) ?? 0) + 1;
        fleetStreaks.set(scope, streak);
        add(
          opened,
          await failing(
            "watchdog_fleet",
            scope,
            streak,
            { pool: c.pool, country: c.country, ...summary(c), requestId: c.requestId },
            runAt,
          ),
        );
      }
      for (const scope of fleetStreaks.keys()) if (!checked.has(scope)) fleetStreaks.delete(scope);
      add(resolved, await resolveUnlisted(pools, [...checked], runAt));
    }
    for (const a of opened) log.warn({ alertId: a.id, kind: a.kind, scope: a.scope }, "alert opened");
    for (const a of resolved) log.info({ alertId: a.id, kind: a.kind, scope: a.scope }, "alert resolved");

    if (deps.metrics) {
      countWatchdogCheck(
        deps.metrics,
        "self",
        self.ok ? "ok" : (self.gateway.error ?? self.target.error ?? "timeout"),
      );
      for (const c of checks) countWatchdogCheck(deps.metrics, c.pool, c.ok ? "ok" : (c.error ?? "timeout"));
    }
    const out: WatchdogRun = {
      runAt,
      self,
      checks,
      classification,
      opened,
      resolved,
      durationMs: Math.round(performance.now() - started),
    };
    deps.onRun?.(out);
    return out;
  }

  let chain: Promise<unknown> = Promise.resolve();
  const runOnce = (): Promise<WatchdogRun> => {
    const next = chain.then(run);
    chain = next.catch(() => {});
    return next;
  };

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let failures = 0;
  let halted: false | "kill_switch" | "paused" = false;
  const runCap = new HourlyCap("watchdog", config.maxRunsPerHour ?? 120, deps.now ?? Date.now);
  const schedule = () => {
    timer = setTimeout(async () => {
      try {
        // Engaged, scheduled runs stop (no purchases through the gateway, no alerts), recorded once
        // per engagement in the log and in job_runs like the API's crons.
        // A pause of the watchdog alone (ADR 0018) stops it the same way, recorded as `paused`.
        const stop = deps.redis
          ? await loopStopped(deps.redis, "watchdog", deps.killSwitchKey, deps.pauseKey)
          : null;
        if (stop) {
          if (halted !== stop) {
            halted = stop;
            log.warn({ reason: stop }, `watchdog stopped: ${stop}`);
            await recordLoopSkip(deps.db, "watchdog", stop);
          }
        } else if (runCap.left() === 0) {
          halted = false;
          if (await runCap.recordSkip(deps.db))
            log.warn({ reason: "run_cap", cap: runCap.cap }, "watchdog stopped: run_cap until the next hour");
        } else {
          halted = false;
          runCap.spend();
          await runOnce();
        }
        failures = 0;
      } catch (err) {
        // Postgres down or the like: say so once per outage, keep the schedule.
        if (failures++ === 0) log.warn({ err: (err as Error).message }, "watchdog run failed");
      }
      if (!stopped) schedule();
    }, config.intervalMs);
    timer.unref();
  };
  schedule();

  return {
    runOnce,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await chain;
    },
  };
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
