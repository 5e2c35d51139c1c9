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
 * Check error codes (stable: rows keep them; documented in prober/README.md). Our side of the
 * wire, whatever group it happened in: `gateway_unreachable` (no TCP to the gateway, or it closed
 * before answering), `proxy_auth_failed` (our key was refused: 407, cap 402, suspended 403, 429,
 * bad username 400), `gateway_error` (any other non-exit answer: 503, target blocked, garbage).
 * The exit's side: `no_exit` (502 E_NO_STOCK / E_SESSION_PEER_GONE), `tunnel_failed` (502: the exit
 * could not reach the target), `tls_failed` (handshake inside the tunnel failed or the certificate
 * did not verify), `http_status` (not 200), `body_failed` (closed before the whole body),
 * `timeout` (over WATCHDOG_TIMEOUT_MS). Self-check only: `target_unreachable` (no TCP to the target).
 */
import { createHash } from "node:crypto";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { isIP, connect as netConnect, type Socket } from "node:net";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import type { Queryable } from "../shared/db/pool.ts";
import { formatUsername } from "../shared/dsl.ts";
import { newId, randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { killSwitchEngaged, recordKillSwitchSkip } from "../shared/kill-switch.ts";
import type { RedisClient } from "../shared/redis.ts";
import type { ProberConfig } from "./config.ts";
import type { ProbeTargetConfig } from "./probe.ts";

export const WATCHDOG_ERRORS = [
  "gateway_unreachable",
  "proxy_auth_failed",
  "gateway_error",
  "no_exit",
  "tunnel_failed",
  "tls_failed",
  "http_status",
  "body_failed",
  "timeout",
  "target_unreachable",
] as const;
export type WatchdogError = (typeof WATCHDOG_ERRORS)[number];

/** Failures that say nothing about the exit: the gateway or our own key refused us. */
const OWN_SIDE: ReadonlySet<WatchdogError> = new Set([
  "gateway_unreachable",
  "proxy_auth_failed",
  "gateway_error",
]);

export type GroupPool = "mbl" | "peer";

export interface WatchdogGroup {
  pool: GroupPool;
  /** ISO-2 lowercase */
  country: string;
}

export interface CheckResult {
  ok: boolean;
  /** start of the check to the last body byte (or to the TCP connect for the gateway port) */
  latencyMs?: number;
  error?: WatchdogError;
  /** free text for logs and alert details (never a selector, never a secret) */
  detail?: string;
}

export interface GroupCheck extends WatchdogGroup, CheckResult {
  /** X-Request-ID sent to the gateway, to find the request in its logs */
  requestId: string;
}

export interface SelfCheck {
  ok: boolean;
  /** TCP connect to the gateway's customer port */
  gateway: CheckResult;
  /** the target fetched directly from the watchdog's host, no gateway */
  target: CheckResult;
}

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
      ...(config.WATCHDOG_GROUPS ? { groups: config.WATCHDOG_GROUPS } : {}),
    },
  };
}

export type AlertKind = "watchdog_self" | "watchdog_fleet";

export interface AlertChange {
  id: string;
  kind: AlertKind;
  scope: string;
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
  log?: (line: string) => void;
  /** the kill switch's Redis key; tests pass their own so they stop no one else's loops */
  killSwitchKey?: string;
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
  const log = deps.log ?? ((l: string) => console.log(l));
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
      if (tierNoted !== tier) log(`prober: watchdog: the key's tier is ${tier}: checking pool ${tier} only`);
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
      const opened = await proxyConnect(proxyAddr, config.target, { authorization, requestId }, track);
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

  async function record(runAt: Date, self: SelfCheck, checks: GroupCheck[]): Promise<void> {
    const selfError = self.gateway.error ?? self.target.error ?? null;
    const rows = [
      { pool: "self", country: null, ok: self.ok, latencyMs: self.target.latencyMs, error: selfError },
      ...checks.map((c) => ({ ...c, error: c.error ?? null })),
    ];
    await deps.db.query(
      `INSERT INTO watchdog_checks (run_at, pool, country, ok, latency_ms, error)
       SELECT $1::timestamptz, * FROM unnest($2::text[], $3::text[], $4::bool[], $5::int[], $6::text[])`,
      [
        runAt.toISOString(),
        rows.map((r) => r.pool),
        rows.map((r) => r.country),
        rows.map((r) => r.ok),
        rows.map((r) => (r.ok ? (r.latencyMs ?? null) : null)),
        rows.map((r) => (r.ok ? null : (r.error ?? "timeout"))),
      ],
    );
  }

  /** Opens (or refreshes) the scope's alert once its streak reaches the threshold. */
  async function failing(
    kind: AlertKind,
    scope: string,
    streak: number,
    detail: Record<string, unknown>,
    at: Date,
  ): Promise<AlertChange | undefined> {
    const body = JSON.stringify({ ...detail, consecutiveFailures: streak, proxy: selfScope });
    if (streak < config.failsToAlert) {
      // Below the threshold (e.g. just after a restart) an alert that is already open stays open.
      await deps.db.query(
        "UPDATE alerts SET last_seen_at = $3, detail = $4::jsonb WHERE kind = $1 AND scope = $2 AND resolved_at IS NULL",
        [kind, scope, at.toISOString(), body],
      );
      return undefined;
    }
    const { rows } = await deps.db.query<{ id: string; inserted: boolean }>(
      `INSERT INTO alerts (id, kind, scope, detail, opened_at, last_seen_at)
       VALUES ($1, $2, $3, $4::jsonb, $5, $5)
       ON CONFLICT (kind, scope) WHERE resolved_at IS NULL
       DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at, detail = EXCLUDED.detail
       RETURNING id, (xmax = 0) AS inserted`,
      [newId("alert"), kind, scope, body, at.toISOString()],
    );
    const row = rows[0];
    return row?.inserted ? { id: row.id, kind, scope } : undefined;
  }

  async function resolve(kind: AlertKind, scope: string, at: Date): Promise<AlertChange[]> {
    const { rows } = await deps.db.query<{ id: string }>(
      `UPDATE alerts SET resolved_at = GREATEST(opened_at, $3::timestamptz)
       WHERE kind = $1 AND scope = $2 AND resolved_at IS NULL RETURNING id`,
      [kind, scope, at.toISOString()],
    );
    return rows.map((r) => ({ id: r.id, kind, scope }));
  }

  /** Fleet alerts in this watchdog's remit whose group is no longer listed: nothing left to sell there. */
  async function resolveUnlisted(
    pools: readonly GroupPool[],
    checked: string[],
    at: Date,
  ): Promise<AlertChange[]> {
    const { rows } = await deps.db.query<{ id: string; scope: string }>(
      `UPDATE alerts SET resolved_at = GREATEST(opened_at, $1::timestamptz),
              detail = detail || '{"resolvedBy": "not_listed"}'::jsonb
       WHERE kind = 'watchdog_fleet' AND resolved_at IS NULL
         AND split_part(scope, '-', 1) = ANY($2::text[])
         AND NOT (scope = ANY($3::text[]))
         AND ($4::text[] IS NULL OR scope = ANY($4::text[]))
       RETURNING id, scope`,
      [at.toISOString(), pools, checked, config.groups ?? null],
    );
    return rows.map((r) => ({ id: r.id, kind: "watchdog_fleet" as const, scope: r.scope }));
  }

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
    for (const a of opened) log(`prober: watchdog: alert ${a.id} opened: ${a.kind} ${a.scope}`);
    for (const a of resolved) log(`prober: watchdog: alert ${a.id} resolved: ${a.kind} ${a.scope}`);

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
  let halted = false;
  const schedule = () => {
    timer = setTimeout(async () => {
      try {
        // Engaged, scheduled runs stop (no purchases through the gateway, no alerts), recorded once
        // per engagement in the log and in job_runs like the API's crons.
        if (deps.redis && (await killSwitchEngaged(deps.redis, deps.killSwitchKey))) {
          if (!halted) {
            halted = true;
            log("prober: watchdog: skipped: kill_switch");
            await recordKillSwitchSkip(deps.db, "watchdog");
          }
        } else {
          halted = false;
          await runOnce();
        }
        failures = 0;
      } catch (err) {
        // Postgres down or the like: say so once per outage, keep the schedule.
        if (failures++ === 0) log(`prober: watchdog: run failed: ${(err as Error).message}`);
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

function summary(c: CheckResult): Record<string, unknown> {
  return {
    ok: c.ok,
    ...(c.error ? { error: c.error } : {}),
    ...(c.detail ? { detail: c.detail.slice(0, 200) } : {}),
    ...(c.latencyMs !== undefined ? { latencyMs: c.latencyMs } : {}),
  };
}

function countBy(items: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of items) out[i] = (out[i] ?? 0) + 1;
  return out;
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

type Track = (cleanup: () => void) => void;
type Failure = { ok: false; error: WatchdogError; detail?: string };

/** Runs one check under a deadline; never throws; destroys every socket it opened either way. */
async function timed(
  timeoutMs: number,
  work: (track: Track, started: number) => Promise<CheckResult>,
): Promise<CheckResult> {
  const started = performance.now();
  const cleanups: (() => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, error: "timeout", detail: `over ${timeoutMs} ms` }),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([
      work((c) => cleanups.push(c), started).catch(
        (err: Error): CheckResult => ({ ok: false, error: "body_failed", detail: err.message }),
      ),
      deadline,
    ]);
  } finally {
    clearTimeout(timer);
    for (const c of cleanups) c();
  }
}

function tcpConnect(
  addr: { host: string; port: number },
  track: Track,
): Promise<{ ok: true; socket: Socket } | { ok: false; detail: string }> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: addr.host, port: addr.port });
    track(() => socket.destroy());
    // Resolving twice is harmless; the listener also keeps a later reset from being an uncaught error.
    socket.on("error", (err: NodeJS.ErrnoException) =>
      resolve({ ok: false, detail: err.code ?? err.message }),
    );
    socket.once("connect", () => resolve({ ok: true, socket }));
  });
}

const MAX_HEADER = 16 * 1024;

function authority(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The gateway's answer to CONNECT, as our code: by its error code (Proxy-Status) first, then status. */
export function connectFailure(status: number, gatewayCode: string | undefined): WatchdogError {
  switch (gatewayCode) {
    case "E_NO_STOCK":
    case "E_SESSION_PEER_GONE":
      return "no_exit";
    case "E_TARGET_UNREACHABLE":
      return "tunnel_failed";
    case "E_AUTH_REQUIRED":
    case "E_AUTH_INVALID":
    case "E_CAP_EXCEEDED":
    case "E_CREDENTIAL_SUSPENDED":
    case "E_USERNAME_PARSE":
    case "E_RATE_LIMITED":
      return "proxy_auth_failed";
    case "E_TARGET_BLOCKED":
    case "E_INTERNAL":
      return "gateway_error";
  }
  if (status === 502) return "tunnel_failed";
  if ([400, 402, 407, 429].includes(status)) return "proxy_auth_failed";
  return "gateway_error";
}

/** HTTP CONNECT through the gateway as a customer; the open tunnel, or why not. */
function proxyConnect(
  proxy: { host: string; port: number },
  target: ProbeTargetConfig,
  auth: { authorization: string; requestId: string },
  track: Track,
): Promise<{ ok: true; socket: Socket } | Failure> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: proxy.host, port: proxy.port });
    track(() => socket.destroy());
    let settled = false;
    const done = (r: { ok: true; socket: Socket } | Failure) => {
      if (settled) return;
      settled = true;
      socket.off("data", onData);
      resolve(r);
    };
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buf.length > MAX_HEADER) done({ ok: false, error: "gateway_error", detail: "oversized reply" });
        return;
      }
      const head = buf.subarray(0, end).toString("latin1");
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      if (status === 200) {
        socket.pause();
        const rest = buf.subarray(end + 4);
        if (rest.length > 0) socket.unshift(rest);
        done({ ok: true, socket });
        return;
      }
      const code = /\r\nproxy-status:[^\r\n]*details="([A-Z_]+)"/i.exec(head)?.[1];
      done({
        ok: false,
        error: connectFailure(status, code),
        detail: `gateway ${status || "garbage"}${code ? ` ${code}` : ""}`,
      });
    };
    socket.on("data", onData);
    socket.on("error", (err: NodeJS.ErrnoException) =>
      done({ ok: false, error: "gateway_unreachable", detail: err.code ?? err.message }),
    );
    socket.on("close", () =>
      done({ ok: false, error: "gateway_unreachable", detail: "closed before answering CONNECT" }),
    );
    socket.on("connect", () => {
      const t = authority(target.host, target.port);
      socket.write(
        `CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\nProxy-Authorization: ${auth.authorization}\r\n` +
          `X-Request-ID: ${auth.requestId}\r\n\r\n`,
      );
    });
  });
}

/** TLS to the target over an open socket (a tunnel or a direct connection), then one GET of n bytes. */
async function fetchOver(
  socket: Socket,
  target: ProbeTargetConfig,
  n: number,
  track: Track,
  started: number,
): Promise<CheckResult> {
  const tls = await new Promise<{ ok: true; tls: TLSSocket } | Failure>((resolve) => {
    const t = tlsConnect({
      socket,
      host: target.host,
      // SNI must not be an IP literal (RFC 6066); identity is then checked against `host`.
      servername: isIP(target.host) ? undefined : target.host,
      ca: target.caPem,
      rejectUnauthorized: true,
    });
    track(() => t.destroy());
    t.once("secureConnect", () => resolve({ ok: true, tls: t }));
    // `on`, not `once`: a second error on the same socket must not become an uncaught one.
    t.on("error", (err: NodeJS.ErrnoException) =>
      resolve({ ok: false, error: "tls_failed", detail: err.code ?? err.message }),
    );
    t.once("close", () => resolve({ ok: false, error: "tls_failed", detail: "closed during the handshake" }));
    socket.resume();
  });
  if (!tls.ok) return tls;
  return new Promise<CheckResult>((resolve) => {
    const req = httpRequest({
      createConnection: () => tls.tls,
      method: "GET",
      path: target.pathTemplate.replace("{n}", String(n)),
      headers: {
        Host: authority(target.host, target.port),
        "User-Agent": "peerproxy-watchdog/1",
        Connection: "close",
      },
    });
    track(() => req.destroy());
    req.on("error", (err: NodeJS.ErrnoException) =>
      resolve({ ok: false, error: "body_failed", detail: err.code ?? err.message }),
    );
    req.on("response", (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        res.resume();
        resolve({ ok: false, error: "http_status", detail: `target answered ${res.statusCode}` });
        return;
      }
      let bytes = 0;
      res.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
      });
      res.on("end", () => {
        if (res.complete) resolve({ ok: true, latencyMs: Math.round(performance.now() - started) });
        else resolve({ ok: false, error: "body_failed", detail: `closed after ${bytes} body bytes` });
      });
      res.on("error", (err: NodeJS.ErrnoException) =>
        resolve({
          ok: false,
          error: "body_failed",
          detail: `${err.code ?? err.message} after ${bytes} bytes`,
        }),
      );
      res.on("aborted", () =>
        resolve({ ok: false, error: "body_failed", detail: `aborted after ${bytes} body bytes` }),
      );
    });
    req.end();
  });
}
