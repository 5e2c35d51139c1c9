// The circuit breaker end to end under real customer traffic: curl -> gateway-node (in-process)
// -> relay internal POST /tunnel -> a fault peer -> the HTTPS probe target. When the peer starts
// killing TLS, the gateway's own failure report (closed_without_reply) must get it delisted fast.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGatewayConfig } from "../gateway-node/config.ts";
import { type Gateway, startGateway } from "../gateway-node/gateway.ts";
import { curl, makeCredential } from "../gateway-node/testing.ts";
import type { TestRelay } from "../relay-node/testing/relay.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint, listEndpoint } from "../shared/pool.ts";
import { stateEnv } from "../test/helpers/env.ts";
import type { RunningProber } from "./scheduler.ts";
import type { ProbeTarget } from "./target.ts";
import { type ProberBed, startProberBed } from "./testing/bed.ts";
import type { FaultPeer } from "./testing/fault-peer.ts";

// A country code no other test uses, so the gateway can only pick this file's peer.
const country = `x${"abcdefghijklmnopqrstuvwxyz"[Math.floor(Math.random() * 26)]}`;
let bed: ProberBed;
let relay: TestRelay;
let target: ProbeTarget;
let gw: Gateway;
let prober: RunningProber;
let peer: FaultPeer;
let deviceId: string;
let dir: string;

beforeAll(async () => {
  const env = stateEnv();
  dir = mkdtempSync(join(env.PEERPROXY_TEST_TMP, "breaker-"));
  bed = await startProberBed();
  ({ relay, target } = bed);
  gw = await startGateway(
    loadGatewayConfig({
      REDIS_URL: bed.redisUrl,
      RELAY_SHARED_SECRET: relay.sharedSecret,
      GATEWAY_HTTP_PORT: "0",
      GATEWAY_SOCKS_PORT: "0",
      GATEWAY_ADMIN_PORT: "0",
      GATEWAY_ALLOW_PRIVATE_TARGETS: "1",
    }),
    { redis: relay.redis },
  );
  ({ prober } = bed.startProber(
    {
      PROBE_TICK_MS: "250",
      // Scheduled probes stay out of the way: this test measures the breaker alone.
      PROBE_DISCOVER_MS: "600000",
      PROBE_TLS_TIMEOUT_MS: "2000",
      PROBE_STALL_MS: "2000",
      PROBE_INITIAL_BYTES: "16384",
      PROBE_MAX_BYTES: "1048576",
      PROBE_TRANSFER_TARGET_MS: "200",
    },
    { db: null },
  ));
  ({ peer, deviceId } = await bed.onlinePeer());
});

afterAll(async () => {
  await gw?.close();
  if (deviceId) await delistEndpoint(relay.redis, deviceId).catch(() => {});
  await bed?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("circuit breaker under real gateway traffic", () => {
  it("a listed peer that starts dropping TLS mid-traffic is paused and delisted in under 10 s", async () => {
    expect((await prober.probeNow(deviceId, "scheduled")).ok).toBe(true);
    expect((await prober.probeNow(deviceId, "scheduled")).ok).toBe(true);
    await listEndpoint(relay.redis, {
      endpointId: deviceId,
      deviceId,
      pool: "peer",
      kind: "peer",
      country,
      ipType: "residential",
      speedTier: "fast",
      relayInternal: relay.relay.internalUrl,
    });
    const cred = await makeCredential(relay.redis);
    const caFile = join(dir, "ca.pem");
    writeFileSync(caFile, target.caPem);
    const customer = (format = "%{http_code}") =>
      curl(
        [
          "-s",
          "-x",
          `http://${cred.username(`peer-${country}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
          "--cacert",
          caFile,
          "-o",
          "/dev/null",
          "-w",
          format,
          `https://${target.host}:${target.port}/bytes/65536`,
        ],
        10_000,
      );

    const codes: string[] = [];
    for (let i = 0; i < 3; i++) codes.push((await customer()).stdout);
    expect(codes).toEqual(["200", "200", "200"]);

    const faultAt = Date.now();
    peer.fault = "drop_on_client_hello";
    let delistedAt = 0;
    // Customers keep coming while the exit is broken (bounded: 10 s of attempts at most).
    while (Date.now() - faultAt < 10_000) {
      const r = await customer();
      codes.push(r.stdout);
      if ((await relay.redis.raw.sismember(keys.poolListed(), deviceId)) === 0) {
        delistedAt = Date.now();
        break;
      }
    }
    expect(delistedAt, `still listed after 10 s; customer codes ${codes.join(",")}`).toBeGreaterThan(0);
    const faultToDelistMs = delistedAt - faultAt;
    console.log(
      `fault-to-delist under gateway traffic: ${faultToDelistMs} ms (${codes.length - 3} customer attempts after the fault)`,
    );
    expect(faultToDelistMs).toBeLessThan(10_000);

    const reports = (await relay.redis.raw.lrange(keys.tunnelFailures(), 0, 200)).map(
      (r) => JSON.parse(r) as { endpointId: string; reason: string },
    );
    expect(reports.some((r) => r.endpointId === deviceId && r.reason === "closed_without_reply")).toBe(true);
    expect(await relay.redis.hgetall(keys.probe(deviceId))).toMatchObject({
      paused: "1",
      lastResult: "tls_dropped_before_hello",
      pausedReason: "breaker:tls_dropped_before_hello",
    });
    // Off sale: the next customer gets no stock instead of a broken exit.
    expect((await customer("%{http_connect}")).stdout).toBe("502");
  });
});
