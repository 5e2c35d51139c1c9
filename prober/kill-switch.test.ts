// The kill switch stops the prober's loop and the fleet watchdog's schedule, recorded like the
// API's crons (job_runs `skipped`, reason kill_switch). Each test uses a kill-switch key of its own:
// the real one would stop every other test file's loops too.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { closedPort } from "../gateway-node/testing.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { createPool, type Pool } from "../shared/db/pool.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { logMessages, memoryLogger } from "../shared/log.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { loadProberConfig } from "./config.ts";
import { proberRedis, type RunningProber, startProber } from "./scheduler.ts";
import { type ProbeTarget, startProbeTarget } from "./target.ts";
import { type FaultPeer, startFaultPeer } from "./testing/fault-peer.ts";
import { loopSkips } from "./testing/loop-skips.ts";
import { type RunningWatchdog, startWatchdog, type WatchdogRun } from "./watchdog.ts";

const tenant = `agent_${randomHex(5)}`;
let relay: TestRelay;
let target: ProbeTarget;
let db: Pool;
let prober: RunningProber | undefined;
let watchdog: RunningWatchdog | undefined;
let peer: FaultPeer | undefined;

beforeAll(async () => {
  const env = stateEnv();
  relay = await startTestRelay({ PRESENCE_REFRESH_MS: "1000" });
  target = await startProbeTarget();
  db = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
});

afterAll(async () => {
  await prober?.stop();
  await watchdog?.stop();
  await peer?.close();
  await relay?.close();
  await target?.stop();
  await db?.end();
});

const skips = (loop: string, since: Date, reasons: string[]) => loopSkips(db, loop, since, reasons);

describe("the kill switch", () => {
  it("engaged, the prober probes nothing and says so once; released, it probes again", async () => {
    const killSwitchKey = `ops:kill_switch:test:${randomHex(4)}`;
    await relay.redis.set(killSwitchKey, "engaged by test");
    const since = new Date(Date.now() - 1000);
    const config = loadProberConfig({
      REDIS_URL: stateEnv().REDIS_URL,
      RELAY_SHARED_SECRET: relay.sharedSecret,
      PROBE_TARGET_HOST: target.host,
      PROBE_TARGET_PORT: String(target.port),
      PROBE_TARGET_CA: target.caPem,
      PROBE_ENDPOINT_PREFIX: tenant,
      PROBE_TICK_MS: "100",
      PROBE_DISCOVER_MS: "200",
      PROBE_NEW_SPREAD_MS: "50",
    });
    const logs: string[] = [];
    const results: string[] = [];
    prober = startProber(config, {
      redis: proberRedis(relay.redis),
      db,
      target: {
        host: target.host,
        port: target.port,
        caPem: target.caPem,
        pathTemplate: config.PROBE_TARGET_PATH,
      },
      log: memoryLogger(logs, "prober"),
      onResult: (r) => results.push(r.endpointId),
      killSwitchKey,
    });
    const deviceId = `${tenant}${randomHex(3)}`;
    peer = await startFaultPeer({
      url: relay.relay.wsUrl,
      token: await relay.token(deviceId),
      fault: "good",
    });
    await waitUntil(
      async () => (await relay.redis.hgetall(keys.presence(deviceId))).relayInternal,
      5_000,
      "presence",
    );
    // Many ticks and discovery rounds with a new online device: nothing is probed.
    await new Promise((r) => setTimeout(r, 1500));
    expect(results).toEqual([]);
    expect(logMessages(logs).filter((m) => m.startsWith("probing stopped: kill_switch"))).toHaveLength(1);
    expect(await skips("prober", since, ["kill_switch"])).toEqual([{ detail: { reason: "kill_switch" } }]);

    await relay.redis.del(killSwitchKey);
    await waitUntil(async () => results.includes(deviceId), 10_000, "a probe after the release");
    expect(logMessages(logs)).toContain("kill switch released, probing again");
  });

  it("engaged, the fleet watchdog's schedule runs nothing and records the skip", async () => {
    const killSwitchKey = `ops:kill_switch:test:${randomHex(4)}`;
    await relay.redis.set(killSwitchKey, "engaged by test");
    const since = new Date(Date.now() - 1000);
    const runs: WatchdogRun[] = [];
    const logs: string[] = [];
    watchdog = startWatchdog(
      {
        // Nothing listens there: a run would fail loudly and open an alert; none may start.
        proxyUrl: `http://127.0.0.1:${await closedPort()}`,
        username: "psx_killswitch",
        password: "pak_x",
        target: { host: target.host, port: target.port, caPem: target.caPem, pathTemplate: "/bytes/{n}" },
        intervalMs: 100,
        failsToAlert: 1,
        timeoutMs: 1_000,
        concurrency: 1,
        bytes: 1024,
        groups: ["peer-zz"],
      },
      {
        db,
        redis: relay.redis,
        onRun: (r) => runs.push(r),
        log: memoryLogger(logs, "prober"),
        killSwitchKey,
      },
    );
    await new Promise((r) => setTimeout(r, 800));
    expect(runs).toEqual([]);
    expect(logMessages(logs)).toEqual(["watchdog stopped: kill_switch"]);
    expect(await skips("watchdog", since, ["kill_switch"])).toEqual([{ detail: { reason: "kill_switch" } }]);
    await watchdog.stop();
    watchdog = undefined;
    await relay.redis.del(killSwitchKey);
  });
});
