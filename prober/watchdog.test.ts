// The fleet watchdog against real components: curl-free customer requests from prober/watchdog.ts
// -> the real gateway (in-process) -> a real relay -> a fault peer (pool peer), or -> tinyproxy as a
// modem (pool mbl) -> the local HTTPS target; checks and alerts in the run's real Postgres.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort, waitUntil } from "../dev/proc.ts";
import { loadGatewayConfig } from "../gateway-node/config.ts";
import { type Gateway, startGateway } from "../gateway-node/gateway.ts";
import { type Modem, makeCredential, startTinyproxy, type TestCredential } from "../gateway-node/testing.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { createPool, type Pool, type Queryable } from "../shared/db/pool.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { memoryLogger, silentLogger } from "../shared/log.ts";
import { delistEndpoint, listEndpoint } from "../shared/pool.ts";
import { ownRedis, stateEnv } from "../test/helpers/env.ts";
import { newProberMetrics, registerProberMetrics } from "./metrics.ts";
import { type ProbeTarget, startProbeTarget } from "./target.ts";
import { type FaultPeer, startFaultPeer } from "./testing/fault-peer.ts";
import {
  classifyWatchdog,
  connectFailure,
  type GroupCheck,
  type SelfCheck,
  startWatchdog,
  type WatchdogConfig,
  type WatchdogDeps,
  type WatchdogRun,
} from "./watchdog.ts";

const letter = () => "abcdefghijklmnopqrstuvwxyz"[Math.floor(Math.random() * 26)]!;
// Country codes no other test file uses, so the gateway can only pick this file's exits.
const peerCountry = `w${letter()}`;
const modemCountry = `y${letter()}`;
const PEER_SCOPE = `peer-${peerCountry}`;
const MODEM_SCOPE = `mbl-${modemCountry}`;
const deviceId = `agent_${randomHex(8)}`;
const modemId = `modem_${randomHex(8)}`;

let relay: TestRelay;
let target: ProbeTarget;
let modem: Modem;
let gw: Gateway;
let peer: FaultPeer;
let db: Pool;
let cred: TestCredential;
const runAts: Date[] = [];
const stops: (() => Promise<void>)[] = [];

function gatewayConfig(port = "0") {
  return loadGatewayConfig({
    REDIS_URL: redisServer.url,
    RELAY_SHARED_SECRET: relay.sharedSecret,
    GATEWAY_HTTP_PORT: port,
    GATEWAY_SOCKS_PORT: "0",
    GATEWAY_ADMIN_PORT: "0",
    GATEWAY_ALLOW_PRIVATE_TARGETS: "1",
    GATEWAY_CONNECT_TIMEOUT_MS: "3000",
    GATEWAY_DRAIN_MS: "0",
  });
}

async function upsertRollup() {
  for (const [pool, country] of [
    ["peer", peerCountry],
    ["mbl", modemCountry],
  ])
    await db.query(
      `INSERT INTO pool_rollup (pool, country, registered, online, verified, listed, tier_fast, tier_medium, tier_slow, tier_unknown, computed_at)
       VALUES ($1, $2, 0, 1, 1, 1, 0, 0, 0, 1, now())
       ON CONFLICT (pool, country) DO UPDATE SET listed = GREATEST(pool_rollup.listed, 1)`,
      [pool, country],
    );
}

// A Redis of its own: in the shared one other files' API cron delists what this file lists.
const redisServer = await ownRedis("watchdog");

beforeAll(async () => {
  const env = stateEnv();
  [relay, target, modem] = await Promise.all([
    startTestRelay({ PRESENCE_REFRESH_MS: "1000", REDIS_URL: redisServer.url }),
    startProbeTarget(),
    startTinyproxy(),
  ]);
  db = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
  gw = await startGateway(gatewayConfig(), { redis: relay.redis });
  peer = await startFaultPeer({ url: relay.relay.wsUrl, token: await relay.token(deviceId), fault: "good" });
  await waitUntil(
    async () => (await relay.redis.hgetall(keys.presence(deviceId))).relayInternal,
    5_000,
    "presence",
  );
  await listEndpoint(relay.redis, {
    endpointId: deviceId,
    deviceId,
    pool: "peer",
    kind: "peer",
    country: peerCountry,
    ipType: "residential",
    speedTier: "fast",
    relayInternal: relay.relay.internalUrl,
  });
  await listEndpoint(relay.redis, {
    endpointId: modemId,
    pool: "mbl",
    kind: "modem",
    country: modemCountry,
    ipType: "mobile",
    speedTier: "unknown",
    host: "127.0.0.1",
    port: modem.port,
  });
  cred = await makeCredential(relay.redis, { tier: "any" });
  await upsertRollup();
});

afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
  peer.fault = "good";
  await db.query("DELETE FROM alerts WHERE scope = ANY($1::text[]) OR detail->>'proxy' = ANY($2::text[])", [
    [PEER_SCOPE, MODEM_SCOPE],
    [`http://127.0.0.1:${gw.httpPort}`],
  ]);
});

afterAll(async () => {
  await db?.query("DELETE FROM pool_rollup WHERE (pool, country) IN (('peer', $1), ('mbl', $2))", [
    peerCountry,
    modemCountry,
  ]);
  await db?.query("DELETE FROM watchdog_checks WHERE country = ANY($1::text[])", [
    [peerCountry, modemCountry],
  ]);
  await db?.query("DELETE FROM watchdog_checks WHERE pool = 'self' AND run_at = ANY($1::timestamptz[])", [
    runAts.map((d) => d.toISOString()),
  ]);
  if (relay) {
    await delistEndpoint(relay.redis, deviceId).catch(() => {});
    await delistEndpoint(relay.redis, modemId).catch(() => {});
    if (cred) await relay.redis.del(keys.credential(cred.keyId), keys.credentialUsed(cred.keyId));
  }
  await gw?.close();
  await peer?.close();
  await modem?.stop();
  await relay?.close();
  await target?.stop();
  await db?.end();
  await redisServer.stop();
});

function watchdog(
  over: Partial<WatchdogConfig> = {},
  deps: Partial<WatchdogDeps> = {},
): { runOnce(): Promise<WatchdogRun>; logs: string[] } {
  const logs: string[] = [];
  const w = startWatchdog(
    {
      proxyUrl: `http://127.0.0.1:${gw.httpPort}`,
      username: `psx_${cred.accountLabel}`,
      password: cred.secret,
      target: { host: target.host, port: target.port, caPem: target.caPem, pathTemplate: "/bytes/{n}" },
      intervalMs: 3_600_000,
      failsToAlert: 2,
      timeoutMs: 5_000,
      concurrency: 4,
      bytes: 1024,
      groups: [PEER_SCOPE, MODEM_SCOPE],
      ...over,
    },
    {
      db,
      redis: relay.redis,
      log: memoryLogger(logs, "prober"),
      onRun: (r) => runAts.push(r.runAt),
      ...deps,
    },
  );
  stops.push(() => w.stop());
  return {
    logs,
    async runOnce() {
      // A concurrent cron run (other test files) rebuilds the rollup from Redis: keep ours present.
      await upsertRollup();
      return w.runOnce();
    },
  };
}

type AlertRow = {
  id: string;
  kind: string;
  scope: string;
  resolved_at: Date | null;
  detail: Record<string, unknown>;
};
async function alertsFor(scopes: string[]): Promise<AlertRow[]> {
  const { rows } = await db.query<AlertRow>(
    "SELECT id, kind, scope, resolved_at, detail FROM alerts WHERE scope = ANY($1::text[]) ORDER BY opened_at",
    [scopes],
  );
  return rows;
}

const verdicts = (r: WatchdogRun) =>
  `${r.classification.verdict}:${r.checks.map((c) => `${c.pool}=${c.ok ? "ok" : c.error}`).join(",")}`;

describe("classifyWatchdog", () => {
  const g = (pool: "mbl" | "peer", country: string, error?: GroupCheck["error"]): GroupCheck => ({
    pool,
    country,
    requestId: "wd_test",
    ok: error === undefined,
    ...(error ? { error } : { latencyMs: 12 }),
  });
  const selfOk: SelfCheck = { ok: true, gateway: { ok: true }, target: { ok: true } };
  const selfDown: SelfCheck = {
    ok: false,
    gateway: { ok: true },
    target: { ok: false, error: "target_unreachable" },
  };

  it("everything passing is clean; no groups with a passing self-check is clean too", () => {
    expect(classifyWatchdog([g("peer", "us"), g("mbl", "de")], selfOk)).toEqual({ verdict: "clean" });
    expect(classifyWatchdog([], selfOk)).toEqual({ verdict: "clean" });
  });

  it("a failing self-check makes the run self, whatever the groups say", () => {
    expect(classifyWatchdog([g("peer", "us"), g("mbl", "de", "tls_failed")], selfDown)).toEqual({
      verdict: "self",
      reason: "self_check_failed",
    });
    expect(classifyWatchdog([], selfDown).verdict).toBe("self");
  });

  it("some groups failing on the exit's side are fleet failures, one per group", () => {
    const bad = g("peer", "br", "tls_failed");
    const c = classifyWatchdog([g("peer", "us"), bad, g("mbl", "de"), g("mbl", "br", "no_exit")], selfOk);
    expect(c.verdict).toBe("fleet");
    expect(c.verdict === "fleet" && c.failing.map((f) => `${f.pool}-${f.country}`)).toEqual([
      "peer-br",
      "mbl-br",
    ]);
  });

  it("every one of two or more groups failing is self: the fleet cannot be judged from here", () => {
    expect(classifyWatchdog([g("peer", "us", "tunnel_failed"), g("mbl", "de", "timeout")], selfOk)).toEqual({
      verdict: "self",
      reason: "every_group_failed",
    });
  });

  it("a single group failing on the exit's side is still the fleet's", () => {
    expect(classifyWatchdog([g("peer", "us", "tls_failed")], selfOk).verdict).toBe("fleet");
  });

  it("a failure on our side of the wire (gateway, our key) is self even in one group", () => {
    for (const error of ["proxy_auth_failed", "gateway_unreachable", "gateway_error"] as const)
      expect(classifyWatchdog([g("peer", "us"), g("mbl", "de", error)], selfOk)).toEqual({
        verdict: "self",
        reason: "own_side_error",
      });
  });

  it("gateway answers map to codes by their Proxy-Status details first", () => {
    expect(connectFailure(502, "E_NO_STOCK")).toBe("no_exit");
    expect(connectFailure(502, "E_SESSION_PEER_GONE")).toBe("no_exit");
    expect(connectFailure(502, "E_TARGET_UNREACHABLE")).toBe("tunnel_failed");
    expect(connectFailure(407, "E_AUTH_INVALID")).toBe("proxy_auth_failed");
    expect(connectFailure(402, "E_CAP_EXCEEDED")).toBe("proxy_auth_failed");
    expect(connectFailure(403, "E_CREDENTIAL_SUSPENDED")).toBe("proxy_auth_failed");
    expect(connectFailure(403, "E_TARGET_BLOCKED")).toBe("gateway_error");
    expect(connectFailure(503, "E_INTERNAL")).toBe("gateway_error");
    expect(connectFailure(502, undefined)).toBe("tunnel_failed");
    expect(connectFailure(0, undefined)).toBe("gateway_error");
  });
});

describe("fleet watchdog through the real gateway", () => {
  it("a healthy fleet: one ok check row with a latency per group, a passing self-check, no alert", async () => {
    const w = watchdog();
    const run = await w.runOnce();
    console.log(
      `watchdog run ${run.durationMs} ms; per check: ${run.checks.map((c) => `${c.pool}-${c.country} ${c.latencyMs} ms`).join(", ")}; self (direct target) ${run.self.target.latencyMs} ms`,
    );
    expect(verdicts(run)).toBe("clean:mbl=ok,peer=ok");
    expect(run.self).toMatchObject({ ok: true, gateway: { ok: true }, target: { ok: true } });
    expect(run.opened).toEqual([]);
    const { rows } = await db.query<{
      pool: string;
      country: string;
      ok: boolean;
      latency_ms: number | null;
    }>(
      "SELECT pool, country, ok, latency_ms FROM watchdog_checks WHERE run_at = $1 AND (country = ANY($2::text[]) OR pool = 'self') ORDER BY pool",
      [run.runAt.toISOString(), [peerCountry, modemCountry]],
    );
    expect(rows.map((r) => [r.pool, r.country, r.ok])).toEqual([
      ["mbl", modemCountry, true],
      ["peer", peerCountry, true],
      ["self", null, true],
    ]);
    for (const r of rows) expect(r.latency_ms).toBeGreaterThanOrEqual(0);
    expect(await alertsFor([PEER_SCOPE, MODEM_SCOPE, `http://127.0.0.1:${gw.httpPort}`])).toEqual([]);
  });

  it("one broken group opens one watchdog_fleet alert after two failed runs, for that scope only, and one clean run resolves it; the checks are counted by result", async () => {
    const metrics = newProberMetrics();
    registerProberMetrics(metrics, () => ({ running: 0, probes: 0, breakerProbes: 0, historyErrors: 0 }));
    const w = watchdog({}, { metrics });
    peer.fault = "drop_on_client_hello";
    const first = await w.runOnce();
    expect(verdicts(first)).toBe("fleet:mbl=ok,peer=tls_failed");
    expect(first.opened).toEqual([]);
    expect(await alertsFor([PEER_SCOPE, MODEM_SCOPE])).toEqual([]);

    const second = await w.runOnce();
    expect(second.opened).toEqual([
      { id: expect.stringMatching(/^alert_/), kind: "watchdog_fleet", scope: PEER_SCOPE },
    ]);
    const third = await w.runOnce();
    expect(third.opened).toEqual([]);
    const open = await alertsFor([PEER_SCOPE, MODEM_SCOPE]);
    expect(open).toHaveLength(1);
    expect(open[0]).toMatchObject({
      kind: "watchdog_fleet",
      scope: PEER_SCOPE,
      resolved_at: null,
      detail: { pool: "peer", country: peerCountry, error: "tls_failed", consecutiveFailures: 3 },
    });

    peer.fault = "good";
    const clean = await w.runOnce();
    expect(verdicts(clean)).toBe("clean:mbl=ok,peer=ok");
    expect(clean.resolved).toEqual([{ id: open[0]?.id, kind: "watchdog_fleet", scope: PEER_SCOPE }]);
    const after = await alertsFor([PEER_SCOPE, MODEM_SCOPE]);
    expect(after).toHaveLength(1);
    expect(after[0]?.resolved_at).toBeInstanceOf(Date);
    expect(w.logs.map((l) => JSON.parse(l))).toContainEqual(
      expect.objectContaining({ msg: "alert opened", kind: "watchdog_fleet", scope: PEER_SCOPE }),
    );
    const text = await metrics.registry.metrics();
    expect(text).toContain('prober_watchdog_checks_total{result="tls_failed",pool="peer"} 3\n');
    expect(text).toContain('prober_watchdog_checks_total{result="ok",pool="mbl"} 4\n');
  });

  it("a dead target is a watchdog_self alert, never fleet alerts", async () => {
    const doomed = await startProbeTarget();
    const w = watchdog({
      target: { host: doomed.host, port: doomed.port, caPem: doomed.caPem, pathTemplate: "/bytes/{n}" },
    });
    expect(verdicts(await w.runOnce())).toBe("clean:mbl=ok,peer=ok");
    await doomed.stop();
    const runs = [await w.runOnce(), await w.runOnce()];
    for (const r of runs) {
      expect(r.classification).toEqual({ verdict: "self", reason: "self_check_failed" });
      expect(r.self.target.error).toBe("target_unreachable");
      expect(r.checks.every((c) => !c.ok)).toBe(true);
    }
    const selfScope = `http://127.0.0.1:${gw.httpPort}`;
    expect(runs.map((r) => r.opened.map((a) => `${a.kind} ${a.scope}`))).toEqual([
      [],
      [`watchdog_self ${selfScope}`],
    ]);
    expect(await alertsFor([PEER_SCOPE, MODEM_SCOPE])).toEqual([]);
    const [self] = await alertsFor([selfScope]);
    expect(self?.detail).toMatchObject({
      reason: "self_check_failed",
      target: { ok: false, error: "target_unreachable" },
      groupsChecked: 2,
      groupsFailed: 2,
    });
  });

  it("a dead gateway is a watchdog_self alert, never fleet alerts, and one clean run resolves it", async () => {
    const port = await freePort();
    let gw2 = await startGateway(gatewayConfig(String(port)), { redis: relay.redis });
    stops.push(() => gw2.close());
    const selfScope = `http://127.0.0.1:${port}`;
    stops.push(async () => void (await db.query("DELETE FROM alerts WHERE scope = $1", [selfScope])));
    const w = watchdog({ proxyUrl: selfScope });
    expect(verdicts(await w.runOnce())).toBe("clean:mbl=ok,peer=ok");
    // A streak that started before the outage: the fleet alert must not open while we are blind.
    peer.fault = "drop_on_client_hello";
    expect(verdicts(await w.runOnce())).toBe("fleet:mbl=ok,peer=tls_failed");
    await gw2.close();
    const down = [await w.runOnce(), await w.runOnce()];
    for (const r of down) {
      expect(verdicts(r)).toBe("self:mbl=gateway_unreachable,peer=gateway_unreachable");
      expect(r.self.gateway.error).toBe("gateway_unreachable");
    }
    expect(down[1]?.opened).toEqual([
      { id: expect.stringMatching(/^alert_/), kind: "watchdog_self", scope: selfScope },
    ]);
    expect(await alertsFor([PEER_SCOPE, MODEM_SCOPE])).toEqual([]);

    peer.fault = "good";
    gw2 = await startGateway(gatewayConfig(String(port)), { redis: relay.redis });
    const back = await w.runOnce();
    expect(verdicts(back)).toBe("clean:mbl=ok,peer=ok");
    expect(back.resolved).toEqual([{ id: down[1]?.opened[0]?.id, kind: "watchdog_self", scope: selfScope }]);
    expect((await alertsFor([selfScope]))[0]?.resolved_at).toBeInstanceOf(Date);
  });

  it("changes nothing in the pool: listings, endpoint hashes, probe state and the rollup are identical, and it writes only its own tables", async () => {
    const poolState = async () => ({
      listed: [
        await relay.redis.raw.sismember(keys.poolListed(), deviceId),
        await relay.redis.raw.sismember(keys.poolListed(), modemId),
      ],
      ep: [
        await relay.redis.hgetall(keys.endpoint(deviceId)),
        await relay.redis.hgetall(keys.endpoint(modemId)),
      ],
      probe: [
        await relay.redis.hgetall(keys.probe(deviceId)),
        await relay.redis.hgetall(keys.probe(modemId)),
      ],
      rollup: (
        await db.query(
          "SELECT pool, country, listed, online, verified FROM pool_rollup WHERE country = ANY($1::text[]) ORDER BY pool",
          [[peerCountry, modemCountry]],
        )
      ).rows,
    });
    await upsertRollup();
    const before = await poolState();
    expect(before.listed).toEqual([1, 1]);

    const statements: string[] = [];
    const recording: Queryable = {
      query: (text, params) => {
        statements.push(text);
        return db.query(text, params);
      },
    };
    const redisCalls: string[] = [];
    const readOnly: WatchdogDeps["redis"] = {
      get: (k) => {
        redisCalls.push("get");
        return relay.redis.get(k);
      },
      hgetall: (k) => {
        redisCalls.push("hgetall");
        return relay.redis.hgetall(k);
      },
    };
    const w = watchdog({}, { db: recording, redis: readOnly });
    peer.fault = "drop_on_client_hello";
    await w.runOnce();
    await w.runOnce();
    peer.fault = "good";
    await w.runOnce();
    // The gateway gives back each tunnel's hold as it closes: wait for the live counts to settle.
    await waitUntil(async () => gw.ctx.tunnels.size === 0, 5_000, "tunnels closed");
    await waitUntil(
      async () => JSON.stringify((await poolState()).ep) === JSON.stringify(before.ep),
      5_000,
      "endpoint hashes back to their state before",
    ).catch(() => {});
    expect(await poolState()).toEqual(before);

    const writes = statements.filter((s) => !/^\s*SELECT\b/i.test(s));
    expect(writes.length).toBeGreaterThan(0);
    for (const s of writes) expect(s).toMatch(/^\s*(INSERT INTO|UPDATE) (watchdog_checks|alerts)\b/);
    for (const s of statements.filter((x) => /^\s*SELECT\b/i.test(x))) expect(s).toMatch(/FROM pool_rollup/);
    expect(new Set(redisCalls)).toEqual(new Set(["get", "hgetall"]));
  });

  it("a key sold for one pool checks only that pool (it would silently measure the wrong exits)", async () => {
    const mblKey = await makeCredential(relay.redis, { tier: "mbl" });
    stops.push(
      async () =>
        void (await relay.redis.del(keys.credential(mblKey.keyId), keys.credentialUsed(mblKey.keyId))),
    );
    const w = watchdog({ username: `psx_${mblKey.accountLabel}`, password: mblKey.secret });
    expect(verdicts(await w.runOnce())).toBe("clean:mbl=ok");
    expect(w.logs.filter((l) => l.includes("tier is mbl"))).toHaveLength(1);
  });

  it("a fleet alert whose group is no longer listed is resolved as not_listed", async () => {
    const gone = `peer-j${letter()}`;
    const id = `alert_${randomHex(12)}`;
    stops.push(async () => void (await db.query("DELETE FROM alerts WHERE id = $1", [id])));
    await db.query("INSERT INTO alerts (id, kind, scope, detail) VALUES ($1, 'watchdog_fleet', $2, '{}')", [
      id,
      gone,
    ]);
    const w = watchdog({ groups: [PEER_SCOPE, MODEM_SCOPE, gone] });
    const run = await w.runOnce();
    expect(verdicts(run)).toBe("clean:mbl=ok,peer=ok");
    expect(run.resolved).toEqual([{ id, kind: "watchdog_fleet", scope: gone }]);
    const { rows } = await db.query<{ resolved_at: Date | null; detail: Record<string, unknown> }>(
      "SELECT resolved_at, detail FROM alerts WHERE id = $1",
      [id],
    );
    expect(rows[0]?.resolved_at).toBeInstanceOf(Date);
    expect(rows[0]?.detail).toEqual({ resolvedBy: "not_listed" });
  });

  it("runs on its own schedule and stop() waits for the run in flight", async () => {
    const seen: WatchdogRun[] = [];
    const w = startWatchdog(
      {
        proxyUrl: `http://127.0.0.1:${gw.httpPort}`,
        username: `psx_${cred.accountLabel}`,
        password: cred.secret,
        target: { host: target.host, port: target.port, caPem: target.caPem, pathTemplate: "/bytes/{n}" },
        intervalMs: 100,
        failsToAlert: 2,
        timeoutMs: 5_000,
        concurrency: 2,
        bytes: 1024,
        groups: [PEER_SCOPE, MODEM_SCOPE],
      },
      {
        db,
        log: silentLogger(),
        onRun: (r) => {
          runAts.push(r.runAt);
          seen.push(r);
        },
      },
    );
    await upsertRollup();
    await waitUntil(async () => seen.length >= 2, 5_000, "two scheduled runs");
    await w.stop();
    const n = seen.length;
    await new Promise((r) => setTimeout(r, 300));
    expect(seen.length).toBe(n);
    expect(seen.every((r) => r.classification.verdict === "clean")).toBe(true);
  });
});
