// Dead-relay failover (issue 13): a relay that stays down loses its devices to a live relay of
// another region. Real relays, the real API in wrangler dev and real peers, the TypeScript SDK in
// process and the Go binary as its own process (dev/edges.ts, as two-regions.test.ts): the US relay
// is SIGKILLed and left down; each US device's sockets fail twice, the peer asks the refresh
// endpoint where to go and moves to the EU relay, without a refresh storm.
// Own Redis and Postgres: the test rewrites the global `relay_regions` setting.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RelayEdge, relayRegionsSetting, startRelays } from "../dev/edges.ts";
import { freePort, type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { type StateServices, startStateServices } from "../dev/services.ts";
import { type RunningPeer, readState, startPeer } from "../peer-node/src/index.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { deriveDeviceId } from "../shared/jwt.ts";
import { keys } from "../shared/keys.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { type ApiRecorder, startApiRecorder } from "./helpers/api-recorder.ts";
import { stateEnv } from "./helpers/env.ts";
import { goBinary } from "./helpers/go.ts";

const tmp = stateEnv().PEERPROXY_TEST_TMP;

let state: StateServices;
let api: Api;
let relays: RelayEdge[];
let redis: TcpRedis;
const peers: RunningPeer[] = [];
/** The Go peer (peer-go/) on the US relay, its API calls counted by a recorder in front of the API. */
let goPeer: Service | undefined;
let goRecorder: ApiRecorder;
let goDevice = "";
const goState = join(tmp, `relay-failover-${process.pid}-go.json`);
/** Refresh calls each device made, by deviceId (from the URL the SDK posted to). */
const refreshCalls = new Map<string, number>();
const lines: string[] = [];

const countingFetch = (url: string, init: RequestInit) => {
  const m = /\/v1\/peer\/(?:agents|token)\/(agent_[0-9a-f]+)\/refresh$/.exec(url);
  if (m) refreshCalls.set(m[1]!, (refreshCalls.get(m[1]!) ?? 0) + 1);
  return fetch(url, init);
};

beforeAll(async () => {
  const built = goBinary(tmp);
  state = await startStateServices({ dir: join(tmp, `relay-failover-${process.pid}`) });
  const env = state.env;
  redis = tcpRedis(env.REDIS_URL);
  const relayPorts = [];
  for (let i = 0; i < 2; i++) relayPorts.push({ ws: await freePort(), internal: await freePort() });
  // Production timing scaled down: a SIGKILLed relay's alive entry runs out 0.9 s after its last
  // renewal (three of RELAY_ALIVE_REFRESH_MS), its devices' presence 2 s after.
  relays = await startRelays({
    env,
    ports: relayPorts,
    extraEnv: { PRESENCE_TTL_SECONDS: "2", PRESENCE_REFRESH_MS: "500", RELAY_ALIVE_REFRESH_MS: "300" },
  });
  const pool = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
  await pool.query("UPDATE settings SET value = $1 WHERE key = 'relay_regions'", [
    JSON.stringify(relayRegionsSetting(relays)),
  ]);
  const supplier = await createAccountWithKey(pool, { name: "failover supplier", kind: "supplier" });
  await pool.end();
  api = await startApi({ ...stateVars(env), DEV_CLIENT_IP_CLASS: "residential" }, { tmp });

  // One device per region, two sockets each, production-shaped timing scaled down 50x.
  for (const country of ["US", "DE"]) {
    peers.push(
      await startPeer({
        apiKey: supplier.apiKey,
        name: `failover-${country}-${process.pid}`,
        country,
        connections: 2,
        apiUrl: api.url,
        stateFile: join(tmp, `relay-failover-${process.pid}-${country}.json`),
        fetch: countingFetch,
        timing: {
          backoff: { baseMs: 100, maxMs: 2_400, jitterMs: 40, stableMs: 60_000 },
          connectTimeoutMs: 2_000,
          failoverCheckMs: 3_000,
        },
        log: (l) => lines.push(l),
      }),
    );
  }
  goRecorder = await startApiRecorder(() => api.url);
  const goName = `failover-go-${randomBytes(4).toString("hex")}`;
  goDevice = await deriveDeviceId(supplier.apiKey, goName);
  // No RELAY_URL: the API assigns the relay, so the peer may fail over. The test knob scales the
  // production timing 10x down: backoff from 0.5 s, a failover check at most every 3 s.
  goPeer = startProcess("go-peer-failover", await built, ["-connections=2", "-verbose"], {
    env: {
      API_KEY: supplier.apiKey,
      AGENT_NAME: goName,
      COUNTRY: "US",
      API_BASE: goRecorder.url,
      PEER_STATE_FILE: goState,
      PEER_RECONNECT_BASE_MS: "500",
    },
  });
}, 240_000);

afterAll(async () => {
  await Promise.all(peers.map((p) => p.stop()));
  await goPeer?.stop();
  goRecorder?.close();
  await Promise.all((relays ?? []).map((r) => r.service.stop()));
  await api?.stop();
  await redis?.close();
  await state?.stop();
});

describe("a relay left down", () => {
  it("its device moves to the other region's relay within seconds, with at most two refresh calls", async () => {
    const [us, de] = peers as [RunningPeer, RunningPeer];
    const [relayUs, relayEu] = relays as [RelayEdge, RelayEdge];
    expect(us.peer.relayUrl).toBe(relayUs.url);
    expect(de.peer.relayUrl).toBe(relayEu.url);
    const presence = (deviceId: string) => redis.hgetall(keys.presence(deviceId));
    await waitUntil(
      async () =>
        (await presence(us.deviceId)).sockets === "2" &&
        (await presence(de.deviceId)).sockets === "2" &&
        (await presence(goDevice)).relayId === relayUs.id &&
        (await presence(goDevice)).sockets === "2",
      30_000,
      "the three devices present with both sockets, the Go peer on the US relay",
    );
    refreshCalls.clear();
    const goRefreshes = () =>
      goRecorder.calls.filter((p) => p === `/v1/peer/agents/${goDevice}/refresh`).length;
    expect(goRefreshes()).toBe(0);

    await relayUs.service.stop("SIGKILL");
    const killedAt = Date.now();
    await waitUntil(async () => us.peer.relayUrl === relayEu.url, 30_000, "the US device to fail over");
    const movedMs = Date.now() - killedAt;
    await waitUntil(
      async () => {
        const p = await redis.hgetall(keys.presence(us.deviceId));
        return p.relayId === relayEu.id && p.sockets === "2";
      },
      20_000,
      "the US device's two sockets present on the EU relay",
    );
    const routableMs = Date.now() - killedAt;
    console.log(
      `[measure] relay SIGKILLed and left down: device moved after ${movedMs} ms, both sockets on the other relay after ${routableMs} ms; refresh calls ${JSON.stringify(Object.fromEntries(refreshCalls))}`,
    );

    expect(lines.filter((l) => l === `[FAILOVER] relay=${relayEu.url}`)).toHaveLength(1);
    // No storm: one check that still saw the dead relay listed, at most one more that moved it.
    expect(refreshCalls.get(us.deviceId) ?? 0).toBeGreaterThanOrEqual(1);
    expect(refreshCalls.get(us.deviceId) ?? 0).toBeLessThanOrEqual(2);
    // The device on the live relay never noticed.
    expect(refreshCalls.get(de.deviceId) ?? 0).toBe(0);
    // A restart goes straight to the new relay.
    expect(readState(us.peer.config.stateFile)?.relay).toBe(relayEu.url);

    // The Go peer, by the same rule (peer-go/peer/peer.go connectFailed).
    await waitUntil(
      async () => {
        const p = await presence(goDevice);
        return p.relayId === relayEu.id && p.sockets === "2";
      },
      30_000,
      "the Go peer's two sockets present on the EU relay",
    );
    console.log(
      `[measure] Go peer: both sockets on the other relay after ${Date.now() - killedAt} ms; ${goRefreshes()} refresh call(s)`,
    );
    expect(goRefreshes()).toBeGreaterThanOrEqual(1);
    expect(goRefreshes()).toBeLessThanOrEqual(2);
    expect(goPeer!.output()).toContain(`[FAILOVER] relay=${relayEu.url}`);
    expect(JSON.parse(readFileSync(goState, "utf8"))).toMatchObject({
      deviceId: goDevice,
      relay: relayEu.url,
    });
    expect(goPeer!.child.exitCode).toBeNull();
  });
});
