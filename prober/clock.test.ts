// The prober meets relays and gateways in Redis through times: relays stamp each online device's
// presence with Redis's clock, and the prober's schedule (`probe:due`) is swept by whoever claims
// from it. These tests run the real prober process (`prober/main.ts`) on a host whose clock is an
// hour off (libfaketime moves it for that process alone) and check that it still sees the devices
// the relays call online and schedules them by Redis's clock (docs/adr/0031).
import { globSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { ownRedis, stateEnv } from "../test/helpers/env.ts";

const root = join(import.meta.dirname, "..");
/** Debian's libfaketime (scripts/bootstrap.sh installs it), in its multiarch directory. */
const faketime = globSync("/usr/lib/*/faketime/libfaketime.so.1")[0];
/** How far ahead a new device's first probe is spread; far below the hour the host is off by. */
const SPREAD_MS = 120_000;

let own: Awaited<ReturnType<typeof ownRedis>>;
let redis: TcpRedis;
const probers: Service[] = [];

beforeAll(async () => {
  own = await ownRedis("prober-clock");
  redis = tcpRedis(own.url);
});
afterAll(async () => {
  await Promise.all(probers.map((p) => p.stop()));
  await redis?.close();
  await own?.stop();
});

/** The prober process with its host clock moved by `offset` (libfaketime's syntax: "+1h", "-1h"). */
async function proberAt(offset: string, prefix: string): Promise<Service> {
  const env = stateEnv();
  const p = startProcess("prober", process.execPath, [join(root, "prober", "main.ts")], {
    cwd: root,
    env: {
      REDIS_URL: own.url,
      RELAY_SHARED_SECRET: env.RELAY_SHARED_SECRET,
      ENVIRONMENT: "development",
      PROBE_LOCAL_TARGET: "1",
      PROBER_ADMIN_PORT: "0",
      // Only this test's devices, discovered at once, first probes spread over two minutes.
      PROBE_ENDPOINT_PREFIX: prefix,
      PROBE_DISCOVER_MS: "100",
      PROBE_NEW_SPREAD_MS: String(SPREAD_MS),
      LD_PRELOAD: faketime,
      FAKETIME: offset,
      // The wall clock only: timers run on the monotonic one, left alone.
      FAKETIME_DONT_FAKE_MONOTONIC: "1",
    },
  });
  probers.push(p);
  await p.waitFor(/prober ready/, 30_000);
  return p;
}

describe("a prober whose host clock is wrong", () => {
  it("finds libfaketime (scripts/bootstrap.sh installs it)", () => {
    expect(faketime, "libfaketime.so.1 under /usr/lib/*/faketime/").toBeTruthy();
  });

  for (const [how, offset, says] of [
    ["an hour fast", "+1h", "ahead of"],
    ["an hour slow", "-1h", "behind"],
  ] as const) {
    it(`(${how}) sees the devices relays call online and schedules their first probe by Redis's clock`, async () => {
      const prefix = `pclk${randomHex(4)}_`;
      const device = `${prefix}device`;
      // As a relay does when a device connects: its presence, stamped with Redis's clock.
      const seenAt = await redis.time();
      await redis.raw.zadd(keys.onlineDevices(), seenAt, device);

      const prober = await proberAt(offset, prefix);
      // The host's clock really is off (else this test would prove nothing), and the prober says so.
      expect(prober.output()).toMatch(new RegExp(`host's clock is 36\\d\\d\\.\\d s ${says} Redis's`));

      // On its own clock, an hour fast, the device's presence would be an hour stale and never
      // probed; an hour slow, its first probe would be an hour overdue on every other prober's.
      await waitUntil(
        async () => (await redis.raw.zscore(keys.probeDue(), device)) !== null,
        10_000,
        `the prober to schedule ${device}`,
      );
      const due = Number(await redis.raw.zscore(keys.probeDue(), device));
      expect(due).toBeGreaterThanOrEqual(seenAt);
      expect(due).toBeLessThanOrEqual((await redis.time()) + SPREAD_MS);
    }, 60_000);
  }
});
