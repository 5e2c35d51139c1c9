import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { keys } from "../shared/keys.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { loadGatewayConfig } from "./config.ts";
import { type Gateway, startGateway } from "./gateway.ts";
import { TunnelMeter } from "./metering.ts";
import {
  curl,
  type ModemExit,
  makeCredential,
  startModemExit,
  type TestCredential,
  testGatewayEnv,
} from "./testing.ts";

const COUNTRY = "qo";
const MiB = 1024 * 1024;
const LEASE = 256 * 1024;
const redis = tcpRedis(stateEnv().REDIS_URL);
let exit: ModemExit;
let gw: Gateway;
const endpointId = `modem_${crypto.randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  exit = await startModemExit(redis, { endpointId, country: COUNTRY });
  gw = await startGateway(loadGatewayConfig(testGatewayEnv({ GATEWAY_BYTE_LEASE: String(LEASE) })), {
    redis,
  });
});

afterAll(async () => {
  await gw?.close();
  await exit?.stop();
  await redis.close();
});

const proxy = (cred: TestCredential) =>
  `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`;

async function capStopsDownload(viaConnect: boolean) {
  const cap = 5 * MiB;
  const cred = await makeCredential(redis, { capBytes: cap });
  const started = Date.now();
  const r = await curl([
    "-x",
    proxy(cred),
    ...(viaConnect ? ["-p"] : []),
    "-o",
    "/dev/null",
    "-w",
    "%{size_download}",
    `http://127.0.0.1:${exit.targets.httpPort}/bytes/${50 * MiB}`,
  ]);
  const elapsed = Date.now() - started;
  expect(r.code).not.toBe(0);
  const downloaded = Number(r.stdout);
  expect(downloaded).toBeLessThan(cap + MiB);
  // Suspension is part of the Lua call that refused the next lease (or took the closing report):
  // no flush lag, well within a second of the last byte.
  await waitUntil(async () => gw.ctx.tunnels.size === 0, 1000, "tunnel closed");
  const state = await redis.hgetall(keys.credential(cred.keyId));
  expect(state).toMatchObject({ enabled: "0", suspendedReason: "cap" });
  const used = Number(await redis.get(keys.credentialUsed(cred.keyId)));
  expect(used).toBeGreaterThanOrEqual(cap);
  // Leased overshoot bound: at most one read per direction past the last grant (<= 1 MiB target).
  expect(used - cap).toBeLessThanOrEqual(MiB);
  expect(await redis.raw.lrange(keys.credentialSuspendedEvents(), 0, -1)).toContain(cred.keyId);

  const again = await curl(["-x", proxy(cred), "-D", "-", `http://127.0.0.1:${exit.targets.httpPort}/`]);
  expect(again.stdout).toMatch(/^HTTP\/1\.1 402[\s\S]*E_CAP_EXCEEDED/);

  // Topup as the API does it: raise the cap, enable, clear the reason.
  await redis.hset(keys.credential(cred.keyId), {
    capBytes: String(100 * MiB),
    enabled: "1",
    suspendedReason: "",
  });
  const after = await curl([
    "-x",
    proxy(cred),
    "-o",
    "/dev/null",
    "-w",
    "%{http_code} %{size_download}",
    `http://127.0.0.1:${exit.targets.httpPort}/bytes/${MiB}`,
  ]);
  expect(after.stdout).toBe(`200 ${MiB}`);
  return { used, cap, downloaded, elapsed };
}

describe("credential caps", () => {
  it("a 5 MiB cap stops a 50 MiB CONNECT download within the leased overshoot, answers E_CAP_EXCEEDED, and topup re-enables it", async () => {
    const r = await capStopsDownload(true);
    console.log(
      `CONNECT: cap ${r.cap} used ${r.used} overshoot ${r.used - r.cap} downloaded ${r.downloaded} in ${r.elapsed} ms`,
    );
  });

  it("the same holds for absolute-URI forwarding", async () => {
    const r = await capStopsDownload(false);
    console.log(
      `forward: cap ${r.cap} used ${r.used} overshoot ${r.used - r.cap} downloaded ${r.downloaded} in ${r.elapsed} ms`,
    );
  });

  it("a key whose bytes are all leased out is refused with E_CAP_EXCEEDED and keeps no hold", async () => {
    // The gateway asks for the byte lease and the first pick together: a refused lease must give
    // the pick's hold back, or a spent key could still pin endpoints.
    const cred = await makeCredential(redis, { capBytes: 100 * 1024 });
    const other = new TunnelMeter(
      { redis, now: Date.now, leaseBytes: 100 * 1024, flushMs: 1000 },
      cred.keyId,
      "test:other-tunnel",
    );
    expect(await other.start()).toBe(true);
    // Twenty at once, as a spent key hammering the gateway would.
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        curl(["-x", proxy(cred), "-p", "-D", "-", `http://127.0.0.1:${exit.targets.httpPort}/`]),
      ),
    );
    for (const r of answers) expect(r.stdout).toMatch(/^HTTP\/1\.1 402[\s\S]*E_CAP_EXCEEDED/);
    expect(await redis.raw.zcard(keys.credentialConns(cred.keyId))).toBe(0);
    expect((await redis.hgetall(keys.endpoint(endpointId))).conns).toBe("0");
    await other.close();
  });

  it("three parallel tunnels of one key together stay within the cap plus their leased overshoot", async () => {
    const cap = 5 * MiB;
    const cred = await makeCredential(redis, { capBytes: cap });
    await Promise.all(
      [0, 1, 2].map(() =>
        curl([
          "-x",
          proxy(cred),
          "-p",
          "-o",
          "/dev/null",
          `http://127.0.0.1:${exit.targets.httpPort}/bytes/${20 * MiB}`,
        ]),
      ),
    );
    await waitUntil(async () => gw.ctx.tunnels.size === 0, 10_000, "tunnels closed");
    const used = Number(await redis.get(keys.credentialUsed(cred.keyId)));
    console.log(`3 tunnels: cap ${cap} used ${used} overshoot ${used - cap}`);
    expect(used).toBeGreaterThanOrEqual(cap - 3 * LEASE);
    expect(used - cap).toBeLessThanOrEqual(3 * MiB);
    // Closed tunnels leave a tombstone (nothing outstanding) so a retried final report bills nothing.
    const leases = Object.values((await redis.hgetall(keys.credentialLeases(cred.keyId))) ?? {});
    expect(leases.every((v) => v.startsWith("0:") && v.endsWith(":c"))).toBe(true);
  });
});
