/**
 * The prober's loop: finds endpoints to grade (online devices, listed endpoints), probes those that
 * are due with bounded concurrency, runs results through the admission gate into probe:{id}, and
 * delists at once on demotion or a circuit-breaker pause. The breaker reads the gateways' failure
 * reports (cb:tunnel_failures) and fires one debounced re-probe per endpoint within a tick.
 */

import type { Queryable } from "../shared/db/pool.ts";
import { applyProbe, type GateOutcome, gateFromHash, gateToHash } from "../shared/gate.ts";
import { keys } from "../shared/keys.ts";
import { loopStopped, recordLoopSkip } from "../shared/kill-switch.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { HourlyCap } from "../shared/loop-cap.ts";
import { runScript } from "../shared/lua/script.ts";
import { probeClaim } from "../shared/lua/scripts.gen.ts";
import { delistEndpoint } from "../shared/pool.ts";
import type { TcpRedis } from "../shared/redis.node.ts";
import type { RedisClient } from "../shared/redis.ts";
import { basicProxyAuthorization, openUpstreamAuth } from "../shared/upstream-auth.ts";
import type { ProberConfig } from "./config.ts";
import { countProbe, newProberMetrics, type ProberMetrics, registerProberMetrics } from "./metrics.ts";
import {
  type ProbeExit,
  type ProbeOptions,
  type ProbeResult,
  type ProbeTargetConfig,
  probeExit,
} from "./probe.ts";

/** What the prober needs from Redis; the zset and list verbs are not in the shared RedisClient. */
export interface ProberRedis extends Pick<RedisClient, "hgetall" | "hset" | "eval" | "evalsha"> {
  /** members with score >= min (presence:online readers ignore stale members) */
  zmembersSince(key: string, min: number): Promise<string[]>;
  zaddNx(key: string, score: number, member: string): Promise<number>;
  zadd(key: string, score: number, member: string): Promise<number>;
  zrem(key: string, member: string): Promise<number>;
  smembers(key: string): Promise<string[]>;
  lrange(key: string, start: number, stop: number): Promise<string[]>;
}

export function proberRedis(redis: TcpRedis): ProberRedis {
  return {
    hgetall: redis.hgetall,
    hset: redis.hset,
    eval: redis.eval,
    evalsha: redis.evalsha,
    zmembersSince: (key, min) => redis.raw.zrangebyscore(key, min, "+inf"),
    zaddNx: (key, score, member) => redis.raw.zadd(key, "NX", score, member).then(Number),
    zadd: (key, score, member) => redis.raw.zadd(key, score, member).then(Number),
    zrem: (key, member) => redis.raw.zrem(key, member),
    smembers: (key) => redis.raw.smembers(key),
    lrange: (key, start, stop) => redis.raw.lrange(key, start, stop),
  };
}

export type ProbeTrigger = "scheduled" | "breaker";

export interface ProberDeps {
  redis: ProberRedis;
  /** probe history; null = Postgres unavailable (probing goes on, the gap is logged) */
  db: Queryable | null;
  /** Structured log (default: JSON lines on stdout, warnings and errors only; main.ts logs info). */
  log?: Logger;
  /** The clock of probe deadlines and presence scores: main.ts passes Redis's (shared/clock.ts). */
  now?: () => number;
  /** every finished probe, after its state was written (tests and metrics) */
  onResult?: (r: ProbeResult, outcome: GateOutcome, trigger: ProbeTrigger) => void;
  /** the kill switch's Redis key; tests pass their own so they stop no one else's loops */
  killSwitchKey?: string;
  /** this loop's pause key (keys.loopPaused); tests pass their own, like killSwitchKey */
  pauseKey?: string;
}

export interface RunningProber {
  /** Probes one endpoint now, outside the schedule (returns the in-flight run if there is one). */
  probeNow(endpointId: string, trigger: ProbeTrigger): Promise<ProbeResult>;
  stats(): { running: number; probes: number; breakerProbes: number; historyErrors: number };
  /** Prometheus registry: probe outcomes by failure code, default process metrics (admin.ts serves it). */
  metrics: ProberMetrics;
  /** Stops the loop and waits for probes in flight. */
  stop(): Promise<void>;
}

/** Presence members older than this are stale (docs/internal.md "Presence"). */
const PRESENCE_FRESH_MS = 30_000;
/** How far back the breaker reads on start: reports older than this were someone else's problem. */
const BREAKER_START_WINDOW_MS = 30_000;
const BREAKER_BATCH = 200;

interface FailureReport {
  endpointId: string;
  at: number;
}

export function probeOptionsFrom(config: ProberConfig, target: ProbeTargetConfig): ProbeOptions {
  return {
    target,
    relaySecret: config.RELAY_SHARED_SECRET,
    connectTimeoutMs: config.PROBE_CONNECT_TIMEOUT_MS,
    tlsTimeoutMs: config.PROBE_TLS_TIMEOUT_MS,
    stallMs: config.PROBE_STALL_MS,
    overallTimeoutMs: config.PROBE_OVERALL_TIMEOUT_MS,
    initialBytes: config.PROBE_INITIAL_BYTES,
    maxBytes: config.PROBE_MAX_BYTES,
    transferTargetMs: config.PROBE_TRANSFER_TARGET_MS,
    minBytesForSpeed: config.PROBE_MIN_BYTES_FOR_SPEED,
    fastKBps: config.PROBE_FAST_KBPS,
    mediumKBps: config.PROBE_MEDIUM_KBPS,
  };
}

/** Starts the loop. `target` is the resolved probe target (configuration, or the local one in dev). */
export function startProber(
  config: ProberConfig,
  deps: ProberDeps & { target: ProbeTargetConfig },
): RunningProber {
  const { redis } = deps;
  const log = deps.log ?? createLogger({ service: "prober", level: "warn" });
  const metrics = newProberMetrics();
  const now = deps.now ?? Date.now;
  const opts = probeOptionsFrom(config, deps.target);
  const prefix = config.PROBE_ENDPOINT_PREFIX;
  const mine = (id: string) => id.startsWith(prefix);
  const inFlight = new Map<string, Promise<ProbeResult>>();
  const breakerDoneAt = new Map<string, number>();
  let scheduledRunning = 0;
  let breakerRunning = 0;
  let probes = 0;
  let breakerProbes = 0;
  let historyErrors = 0;
  let lastHistoryLog = 0;
  let lastDiscover = 0;
  let breakerHead: string | undefined;
  const breakerSince = now() - BREAKER_START_WINDOW_MS;
  let stopped = false;
  let ticking = false;
  let halted: false | "kill_switch" | "paused" = false;
  // Runaway cap (ADR 0018): at most PROBE_MAX_PER_HOUR probes are launched per UTC hour.
  const probeCap = new HourlyCap("prober", config.PROBE_MAX_PER_HOUR, now);

  const jitter = (base: number) =>
    Math.round(base * (1 + (Math.random() * 2 - 1) * config.PROBE_JITTER_RATIO));

  async function resolveExit(
    endpointId: string,
  ): Promise<{ exit: ProbeExit | null; kind: "peer" | "modem" }> {
    const ep = await redis.hgetall(keys.endpoint(endpointId));
    if (ep.kind === "modem") {
      const port = Number(ep.port);
      if (!ep.host || !(port > 0)) return { kind: "modem", exit: null };
      // A modem with sealed upstream credentials is probed with them, as the gateway dials it.
      const auth =
        ep.upstreamAuth && config.MODEM_UPSTREAM_KEY
          ? await openUpstreamAuth(config.MODEM_UPSTREAM_KEY, ep.upstreamAuth)
          : undefined;
      const proxyAuthorization = auth ? basicProxyAuthorization(auth) : undefined;
      return {
        kind: "modem",
        exit: { kind: "modem", host: ep.host, port, ...(proxyAuthorization ? { proxyAuthorization } : {}) },
      };
    }
    const deviceId = ep.deviceId || endpointId;
    const presence = await redis.hgetall(keys.presence(deviceId));
    return {
      kind: "peer",
      exit: presence.relayInternal ? { kind: "peer", deviceId, relayInternal: presence.relayInternal } : null,
    };
  }

  async function recordHistory(r: ProbeResult, outcome: GateOutcome, trigger: ProbeTrigger): Promise<void> {
    if (!deps.db) return;
    try {
      await deps.db.query(
        `INSERT INTO probe_results (endpoint_id, probe_mode, trigger, ok, failure_reason, tls_handshake_ms,
           throughput_kbps, speed_tier, bytes, duration_ms, verified_after, paused_after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
        [
          r.endpointId,
          r.probeMode,
          trigger,
          r.ok,
          r.failureReason ?? null,
          r.tlsHandshakeMs ?? null,
          r.throughputKBps ?? null,
          r.speedTier,
          r.bytes,
          r.durationMs,
          outcome.next.verified,
          outcome.next.paused,
        ],
      );
    } catch (err) {
      historyErrors++;
      // Postgres being down must not stop grading; say so at most once a minute.
      if (now() - lastHistoryLog > 60_000) {
        lastHistoryLog = now();
        log.warn({ err: (err as Error).message }, "probe history not written; probing continues");
      }
    }
  }

  async function runProbe(endpointId: string, trigger: ProbeTrigger): Promise<ProbeResult> {
    const { exit, kind } = await resolveExit(endpointId);
    const result = await probeExit(endpointId, exit, opts);
    if (result.proberRefused) {
      // A misconfigured prober must not pause, demote or delist a fleet it cannot reach.
      log.error(
        { endpointId, detail: result.detail },
        "the relay refused this prober's secret: no verdict recorded",
      );
      return result;
    }
    countProbe(
      metrics,
      result.ok ? "ok" : (result.failureReason ?? "unknown"),
      trigger,
      result.durationMs / 1000,
    );
    const probeKey = keys.probe(endpointId);
    const prevHash = await redis.hgetall(probeKey);
    const outcome = applyProbe(gateFromHash(prevHash), { ok: result.ok, breaker: trigger === "breaker" });
    const fields: Record<string, string> = {
      ...gateToHash(outcome.next),
      // One failed probe says nothing about speed: keep the last measured tier until a pass.
      speedTier: result.ok ? result.speedTier : (prevHash.speedTier ?? "unknown"),
      lastProbeAt: String(now()),
      lastResult: result.ok ? "ok" : (result.failureReason ?? "unknown"),
      pausedReason: outcome.next.paused
        ? outcome.transitions.includes("paused")
          ? `breaker:${result.failureReason}`
          : (prevHash.pausedReason ?? "")
        : "",
    };
    if (result.tlsHandshakeMs !== undefined) fields.tlsHandshakeMs = String(result.tlsHandshakeMs);
    if (result.ok)
      fields.throughputKBps = result.throughputKBps === undefined ? "" : String(result.throughputKBps);
    await redis.hset(probeKey, fields);
    if (outcome.delist) {
      await delistEndpoint(redis, endpointId);
      log.info(
        { endpointId, transitions: outcome.transitions, failureReason: result.failureReason },
        "endpoint delisted",
      );
    }
    if (result.failureReason === "no_exit_ip" && kind === "peer" && !outcome.next.verified) {
      // Offline and not admitted: stop probing until presence brings it back (discovery re-adds it).
      await redis.zrem(keys.probeDue(), endpointId);
    } else {
      const wait = !result.ok
        ? config.PROBE_RETRY_MS
        : outcome.next.verified
          ? config.PROBE_INTERVAL_MS
          : config.PROBE_ADMIT_INTERVAL_MS;
      await redis.zadd(keys.probeDue(), now() + jitter(wait), endpointId);
    }
    for (const t of outcome.transitions) log.info({ endpointId, transition: t }, "gate transition");
    void recordHistory(result, outcome, trigger);
    deps.onResult?.(result, outcome, trigger);
    return result;
  }

  function launch(endpointId: string, trigger: ProbeTrigger): Promise<ProbeResult> {
    const running = inFlight.get(endpointId);
    if (running) return running;
    probes++;
    probeCap.spend();
    if (trigger === "breaker") {
      breakerProbes++;
      breakerRunning++;
    } else scheduledRunning++;
    const p = runProbe(endpointId, trigger)
      .catch((err: unknown) => {
        log.warn({ endpointId, err: (err as Error).message }, "probe not recorded");
        throw err;
      })
      .finally(() => {
        inFlight.delete(endpointId);
        if (trigger === "breaker") {
          breakerRunning--;
          breakerDoneAt.set(endpointId, now());
        } else scheduledRunning--;
      });
    inFlight.set(endpointId, p);
    p.catch(() => {});
    return p;
  }

  async function discover(): Promise<void> {
    const t = now();
    const online = await redis.zmembersSince(keys.onlineDevices(), t - PRESENCE_FRESH_MS);
    const listed = await redis.smembers(keys.poolListed());
    for (const id of new Set([...online, ...listed])) {
      if (mine(id))
        await redis.zaddNx(keys.probeDue(), t + Math.floor(Math.random() * config.PROBE_NEW_SPREAD_MS), id);
    }
  }

  /**
   * Reads reports newer than the last head seen, without consuming them: the list is a bounded ring
   * (the gateway LTRIMs it) that other readers share. More than BREAKER_BATCH reports in one tick
   * and the oldest of them are skipped; the next scheduled probe still catches those endpoints.
   */
  async function readBreakerReports(): Promise<FailureReport[]> {
    const batch = await redis.lrange(keys.tunnelFailures(), 0, BREAKER_BATCH - 1);
    const fresh: FailureReport[] = [];
    for (const raw of batch) {
      if (raw === breakerHead) break;
      try {
        const r = JSON.parse(raw) as { endpointId?: unknown; at?: unknown };
        const at = Number(r.at);
        if (typeof r.endpointId === "string" && at >= breakerSince)
          fresh.push({ endpointId: r.endpointId, at });
      } catch {}
    }
    if (batch[0] !== undefined) breakerHead = batch[0];
    return fresh;
  }

  async function breaker(): Promise<void> {
    const reports = await readBreakerReports();
    for (const { endpointId } of reports) {
      if (!mine(endpointId) || inFlight.has(endpointId)) continue;
      if (now() - (breakerDoneAt.get(endpointId) ?? 0) < config.PROBE_BREAKER_COOLDOWN_MS) continue;
      if (breakerRunning >= config.PROBE_BREAKER_CONCURRENCY || probeCap.left() === 0) break;
      log.info({ endpointId }, "breaker re-probe");
      void launch(endpointId, "breaker").catch(() => {});
    }
  }

  async function due(): Promise<void> {
    const free = Math.min(config.PROBE_CONCURRENCY - scheduledRunning, probeCap.left());
    if (free <= 0) return;
    const lease = config.PROBE_OVERALL_TIMEOUT_MS + 30_000;
    const claimed = (await runScript(
      redis,
      probeClaim,
      [keys.probeDue()],
      [now(), free, lease, prefix],
    )) as string[];
    for (const id of claimed) if (!inFlight.has(id)) void launch(id, "scheduled").catch(() => {});
  }

  async function tick(): Promise<void> {
    if (ticking || stopped) return;
    ticking = true;
    try {
      // Engaged, the prober neither probes nor delists (the breaker re-probes included); it says
      // so once per engagement, in the log and in job_runs like the API's crons.
      // A pause of the prober alone (ADR 0018) stops it the same way, recorded as `paused`.
      const stop = await loopStopped(redis, "prober", deps.killSwitchKey, deps.pauseKey);
      if (stop) {
        if (halted !== stop) {
          halted = stop;
          log.warn(
            { reason: stop },
            `probing stopped: ${stop} (no probes until ${stop === "paused" ? "resumed" : "a human releases it"})`,
          );
          await recordLoopSkip(deps.db, "prober", stop);
        }
        return;
      }
      if (halted)
        log.info(
          { reason: halted },
          `${halted === "paused" ? "resumed" : "kill switch released"}, probing again`,
        );
      halted = false;
      if (probeCap.left() === 0) {
        if (await probeCap.recordSkip(deps.db))
          log.warn({ reason: "run_cap", cap: probeCap.cap }, "probing stopped: run_cap until the next hour");
        return;
      }
      await breaker();
      if (now() - lastDiscover >= config.PROBE_DISCOVER_MS) {
        lastDiscover = now();
        await discover();
      }
      await due();
    } catch (err) {
      log.warn({ err: (err as Error).message }, "tick failed");
    } finally {
      ticking = false;
    }
  }

  const stats = () => ({ running: inFlight.size, probes, breakerProbes, historyErrors });
  registerProberMetrics(metrics, stats);
  const timer = setInterval(() => void tick(), config.PROBE_TICK_MS);
  void tick();

  return {
    probeNow: (endpointId, trigger) => launch(endpointId, trigger),
    stats,
    metrics,
    async stop() {
      stopped = true;
      clearInterval(timer);
      while (ticking) await new Promise((r) => setTimeout(r, 10));
      await Promise.allSettled([...inFlight.values()]);
    },
  };
}
