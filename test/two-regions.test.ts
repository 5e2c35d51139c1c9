// Horizontal scale (docs/adr/0023): two relays in two regions and two gateways on one Redis and one
// Postgres, started by the same code as `STACK_RELAYS=2 STACK_GATEWAYS=2 npm start` (dev/edges.ts).
// Registration sends each device to the relay of its country's region, and a customer on either
// gateway reaches a device on either relay. Own Redis and Postgres: the test rewrites the global
// `relay_regions` setting, which other files' registrations read.
import { request } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type GatewayEdge,
  type RelayEdge,
  relayRegionsSetting,
  startGateways,
  startRelays,
} from "../dev/edges.ts";
import { freePort, type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { type StateServices, startStateServices } from "../dev/services.ts";
import { startHttpTarget } from "../dev/targets.ts";
import { type RunningPeer, startPeer } from "../peer-node/src/index.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";

const root = join(import.meta.dirname, "..");
const tmp = stateEnv().PEERPROXY_TEST_TMP;

let state: StateServices;
let api: Api;
let relays: RelayEdge[];
let gateways: GatewayEdge[];
let prober: Service;
let redis: TcpRedis;
let target: Awaited<ReturnType<typeof startHttpTarget>>;
const peers: RunningPeer[] = [];
let proxyUser = "";
let proxySecret = "";

beforeAll(async () => {
  state = await startStateServices({ dir: join(tmp, `two-regions-${process.pid}`) });
  const env = state.env;
  redis = tcpRedis(env.REDIS_URL);
  target = await startHttpTarget();
  const relayPorts = [];
  for (let i = 0; i < 2; i++) relayPorts.push({ ws: await freePort(), internal: await freePort() });
  const gatewayPorts = [];
  for (let i = 0; i < 2; i++)
    gatewayPorts.push({ http: await freePort(), socks: await freePort(), admin: await freePort() });
  [relays, gateways] = await Promise.all([
    startRelays({ env, ports: relayPorts }),
    startGateways({ env, ports: gatewayPorts }),
  ]);

  const pool = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
  await pool.query("UPDATE settings SET value = $1 WHERE key = 'relay_regions'", [
    JSON.stringify(relayRegionsSetting(relays)),
  ]);
  const supplier = await createAccountWithKey(pool, { name: "two-regions supplier", kind: "supplier" });
  const customer = await createAccountWithKey(pool, { name: "two-regions customer", kind: "customer" });
  await pool.query("UPDATE accounts SET resell_allowance_bytes = $2 WHERE id = $1", [
    customer.accountId,
    String(1024 ** 3),
  ]);
  await pool.end();

  api = await startApi(
    { ...stateVars(env), DEV_CLIENT_IP_CLASS: "residential", DEV_CLIENT_COUNTRY: "US" },
    { tmp },
  );
  const res = await fetch(`${api.url}/v1/reseller/pool-keys`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": customer.apiKey },
    body: JSON.stringify({ name: "two regions", tier: "any", capBytes: 100 * 1024 ** 2 }),
  });
  const key = (await res.json()) as { username: string; secret: string };
  expect(res.status).toBe(201);
  proxyUser = `${key.username.replace(/-any-any$/, "")}-peer-us`;
  proxySecret = key.secret;

  prober = startProcess("prober", process.execPath, [join(root, "prober", "main.ts")], {
    cwd: root,
    env: {
      REDIS_URL: env.REDIS_URL,
      RELAY_SHARED_SECRET: env.RELAY_SHARED_SECRET,
      DATABASE_URL: env.DATABASE_URL,
      NEON_WS_PROXY: env.NEON_WS_PROXY,
      ENVIRONMENT: "development",
      PROBE_LOCAL_TARGET: "1",
      PROBER_ADMIN_PORT: "0",
      PROBE_ADMIT_INTERVAL_MS: "1000",
    },
  });
  await prober.waitFor(/prober ready/, 30_000);

  // Real SDK peers, in-process: one stating US (default region), one stating DE (the EU region).
  for (const country of ["US", "DE"]) {
    peers.push(
      await startPeer({
        apiKey: supplier.apiKey,
        name: `two-regions-${country}`,
        country,
        connections: 1,
        apiUrl: api.url,
        stateFile: join(tmp, `two-regions-${process.pid}-${country}.json`),
        allowPrivateTargets: true,
        log: () => {},
      }),
    );
  }
}, 180_000);

afterAll(async () => {
  await Promise.all(peers.map((p) => p.stop()));
  await prober?.stop();
  await Promise.all([...(gateways ?? []), ...(relays ?? [])].map((s) => s.service.stop()));
  await api?.stop();
  await target?.stop();
  await redis?.close();
  await state?.stop();
});

/** GET through one gateway's HTTP proxy, pinned to one device. */
function proxiedGet(gateway: GatewayEdge, deviceId: string, url: string) {
  const auth = Buffer.from(`${proxyUser}-pin-device-${deviceId}:${proxySecret}`).toString("base64");
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: gateway.httpPort,
        method: "GET",
        path: url,
        headers: { "proxy-authorization": `Basic ${auth}` },
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString("utf8")));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error("proxied GET timed out")));
    req.on("error", reject);
    req.end();
  });
}

describe("two relays in two regions, two gateways, one Redis and Postgres", () => {
  it("registration assigns each device the relay of its country's region, and it connects there", async () => {
    const [us, de] = peers as [RunningPeer, RunningPeer];
    expect(us.peer.relayUrl).toBe(relays[0]!.url);
    expect(de.peer.relayUrl).toBe(relays[1]!.url);
    await waitUntil(
      async () =>
        (await redis.hgetall(keys.presence(us.deviceId))).relayId === relays[0]!.id &&
        (await redis.hgetall(keys.presence(de.deviceId))).relayId === relays[1]!.id,
      20_000,
      "both devices present on their regions' relays",
    );
  });

  it("a customer on either gateway reaches a device on either relay", async () => {
    const cron = `${api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`;
    for (const p of peers) {
      await waitUntil(
        async () => (await redis.hgetall(keys.probe(p.deviceId))).verified === "1",
        60_000,
        `the prober to verify ${p.deviceId}`,
      );
    }
    await waitUntil(
      async () => {
        await fetch(cron);
        for (const p of peers)
          if ((await redis.raw.sismember(keys.poolListed(), p.deviceId)) !== 1) return false;
        return true;
      },
      30_000,
      "the cron to list both devices",
    );
    for (const gateway of gateways)
      for (const p of peers) {
        const got = await proxiedGet(gateway, p.deviceId, `${target.url}/bytes/2048`);
        expect({
          gateway: gateway.id,
          device: p.deviceId,
          status: got.status,
          bytes: got.body.length,
        }).toEqual({
          gateway: gateway.id,
          device: p.deviceId,
          status: 200,
          bytes: 2048,
        });
      }
  });
});
