// The long-lived loops under operations control (issue 10, ADR 0018): a paused prober or fleet
// watchdog records `skipped: paused` and acts on nothing until resumed, and each has a runaway cap
// per hour (the prober counts probes, the watchdog its scheduled runs) past which it records
// `skipped: run_cap`. Each test uses pause keys of its own: the real ones would stop other files' loops.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { closedPort } from "../gateway-node/testing.ts";
import type { ProbeTarget } from "../prober/target.ts";
import { type ProberBed, startProberBed } from "../prober/testing/bed.ts";
import { loopSkips } from "../prober/testing/loop-skips.ts";
import { type RunningWatchdog, startWatchdog, type WatchdogRun } from "../prober/watchdog.ts";
import type { TestRelay } from "../relay-node/testing/relay.ts";
import type { Pool } from "../shared/db/pool.ts";
import { randomHex } from "../shared/ids.ts";
import { logMessages, memoryLogger } from "../shared/log.ts";

let bed: ProberBed;
let relay: TestRelay;
let target: ProbeTarget;
let db: Pool;
let watchdog: RunningWatchdog | undefined;

beforeAll(async () => {
  bed = await startProberBed();
  ({ relay, target, db } = bed);
});

afterAll(async () => {
  await watchdog?.stop();
  await bed?.close();
});

const skips = (loop: string, since: Date, reasons: string[]) => loopSkips(db, loop, since, reasons);

function startTestProber(opts: { pauseKey: string; maxPerHour?: number; results: string[] }) {
  return bed.startProber(
    {
      PROBE_INTERVAL_MS: "100",
      PROBE_ADMIT_INTERVAL_MS: "100",
      ...(opts.maxPerHour ? { PROBE_MAX_PER_HOUR: String(opts.maxPerHour) } : {}),
    },
    {
      onResult: (r) => opts.results.push(r.endpointId),
      killSwitchKey: `ops:kill_switch:test:${randomHex(4)}`,
      pauseKey: opts.pauseKey,
    },
  );
}

const onlinePeer = async () => (await bed.onlinePeer()).deviceId;

describe("loops under operations control", () => {
  it("a paused prober probes nothing and records skipped: paused once; resumed, it probes again", async () => {
    const pauseKey = `ops:paused:test:${randomHex(4)}`;
    await relay.redis.set(pauseKey, "paused by test");
    const since = new Date(Date.now() - 1000);
    const results: string[] = [];
    const { prober, logs } = startTestProber({ pauseKey, results });
    const deviceId = await onlinePeer();
    await new Promise((r) => setTimeout(r, 1500));
    expect(results).toEqual([]);
    expect(await skips("prober", since, ["paused"])).toEqual([{ detail: { reason: "paused" } }]);
    await relay.redis.del(pauseKey);
    await waitUntil(async () => results.includes(deviceId), 10_000, "a probe after the resume");
    expect(logMessages(logs)).toContain("resumed, probing again");
    await prober.stop();
  });

  it("the prober stops at PROBE_MAX_PER_HOUR probes and records skipped: run_cap once", async () => {
    const since = new Date(Date.now() - 1000);
    const results: string[] = [];
    const { prober } = startTestProber({
      pauseKey: `ops:paused:test:${randomHex(4)}`,
      maxPerHour: 3,
      results,
    });
    await onlinePeer();
    await waitUntil(
      async () => (await skips("prober", since, ["run_cap"])).length > 0,
      15_000,
      "the run cap",
    );
    // Exactly the cap was launched, and nothing more while the hour lasts.
    expect(prober.stats().probes).toBe(3);
    await new Promise((r) => setTimeout(r, 1000));
    expect(prober.stats().probes).toBe(3);
    expect(await skips("prober", since, ["run_cap"])).toEqual([{ detail: { reason: "run_cap", cap: 3 } }]);
    await prober.stop();
  });

  it("a paused watchdog runs nothing; past its hourly cap it records run_cap once", async () => {
    const pauseKey = `ops:paused:test:${randomHex(4)}`;
    await relay.redis.set(pauseKey, "paused by test");
    const since = new Date(Date.now() - 1000);
    const runs: WatchdogRun[] = [];
    const config = {
      proxyUrl: `http://127.0.0.1:${await closedPort()}`,
      username: "psx_opsloops",
      password: "pak_x",
      target: { host: target.host, port: target.port, caPem: target.caPem, pathTemplate: "/bytes/{n}" },
      intervalMs: 100,
      failsToAlert: 1000,
      timeoutMs: 1_000,
      concurrency: 1,
      bytes: 1024,
      // A group no listing has: a run checks nothing and opens no alert.
      groups: [`peer-${randomHex(1)}`],
      maxRunsPerHour: 2,
    };
    watchdog = startWatchdog(config, {
      db,
      redis: relay.redis,
      onRun: (r) => runs.push(r),
      log: memoryLogger([], "prober"),
      killSwitchKey: `ops:kill_switch:test:${randomHex(4)}`,
      pauseKey,
    });
    await new Promise((r) => setTimeout(r, 800));
    expect(runs).toEqual([]);
    expect(await skips("watchdog", since, ["paused", "run_cap"])).toEqual([{ detail: { reason: "paused" } }]);
    await relay.redis.del(pauseKey);
    await waitUntil(
      async () => (await skips("watchdog", since, ["paused", "run_cap"])).length > 1,
      10_000,
      "the run cap",
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(runs).toHaveLength(2);
    expect(await skips("watchdog", since, ["paused", "run_cap"])).toEqual([
      { detail: { reason: "paused" } },
      { detail: { reason: "run_cap", cap: 2 } },
    ]);
  });
});
