// The kill switch stops the prober's loop and the fleet watchdog's schedule, recorded like the
// API's crons (job_runs `skipped`, reason kill_switch). Each test uses a kill-switch key of its own:
// the real one would stop every other test file's loops too.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { closedPort } from "../gateway-node/testing.ts";
import type { TestRelay } from "../relay-node/testing/relay.ts";
import type { Pool } from "../shared/db/pool.ts";
import { randomHex } from "../shared/ids.ts";
import { logMessages, memoryLogger } from "../shared/log.ts";
import type { ProbeTarget } from "./target.ts";
import { type ProberBed, startProberBed } from "./testing/bed.ts";
import { loopSkips } from "./testing/loop-skips.ts";
import { type RunningWatchdog, startWatchdog, type WatchdogRun } from "./watchdog.ts";

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

describe("the kill switch", () => {
  it("engaged, the prober probes nothing and says so once; released, it probes again", async () => {
    const killSwitchKey = `ops:kill_switch:test:${randomHex(4)}`;
    await relay.redis.set(killSwitchKey, "engaged by test");
    const since = new Date(Date.now() - 1000);
    const results: string[] = [];
    const { logs } = bed.startProber({}, { onResult: (r) => results.push(r.endpointId), killSwitchKey });
    const { deviceId } = await bed.onlinePeer();
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
