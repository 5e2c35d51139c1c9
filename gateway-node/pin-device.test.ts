// `pin-device-<deviceId>` in the username (issue 17 item 2, the Go fleet guide's supplier self-test):
// exactly that device while it is online and listed, a named state when not, never another device.
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { connectPeer, type TestPeer } from "../relay-node/testing/peer.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { ownRedis } from "../test/helpers/env.ts";
import { loadGatewayConfig } from "./config.ts";
import { type Gateway, startGateway } from "./gateway.ts";
import {
  curl,
  listPeer,
  makeCredential,
  startTargets,
  type Targets,
  type TestCredential,
  testGatewayEnv,
} from "./testing.ts";

const COUNTRY = "qx";
// A Redis of its own: in the shared one other files' API cron delisted the devices listed here.
const redisServer = await ownRedis("pin-device");
const redis = tcpRedis(redisServer.url);
let relay: TestRelay;
let targets: Targets;
let gw: Gateway;
let cred: TestCredential;
const peers: TestPeer[] = [];
/** listed: a and b; online but never listed: c */
const dev = { a: "", b: "", c: "" };
const sockets: Socket[] = [];

async function peerOnline(deviceId: string): Promise<void> {
  const p = await connectPeer({ url: relay.relay.wsUrl, token: await relay.token(deviceId) });
  await p.waitFor("connected");
  p.sendControl("heartbeat");
  await p.waitFor("heartbeat_ack");
  peers.push(p);
}

beforeAll(async () => {
  [relay, targets] = await Promise.all([startTestRelay({ REDIS_URL: redisServer.url }), startTargets()]);
  for (const k of ["a", "b", "c"] as const) {
    dev[k] = relay.newDeviceId();
    await peerOnline(dev[k]);
  }
  await waitUntil(async () => (await redis.raw.exists(keys.presence(dev.c))) === 1, 5000, "presence of c");
  for (const id of [dev.a, dev.b])
    await listPeer(redis, { deviceId: id, country: COUNTRY, relayInternal: relay.relay.internalUrl });
  gw = await startGateway(
    loadGatewayConfig(
      testGatewayEnv({
        REDIS_URL: redisServer.url,
        RELAY_SHARED_SECRET: relay.sharedSecret,
        GATEWAY_DRAIN_MS: "500",
      }),
    ),
    { redis },
  );
  cred = await makeCredential(redis);
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await gw?.close();
  for (const id of [dev.a, dev.b]) await delistEndpoint(redis, id);
  for (const p of peers) p.close();
  await relay?.close();
  await targets?.stop();
  await redis.close();
  await redisServer.stop();
});

function connectVia(username: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(gw.httpPort, "127.0.0.1");
    sockets.push(s);
    s.on("error", () => {});
    const auth = Buffer.from(`${username}:${cred.secret}`).toString("base64");
    const target = `127.0.0.1:${targets.httpPort}`;
    let out = "";
    s.on("data", (d) => {
      out += d.toString("latin1");
      if (out.includes("\r\n\r\n")) resolve(out);
    });
    s.on("close", () => resolve(out));
    s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`);
  });
}

const conns = async (id: string) => Number((await redis.hgetall(keys.endpoint(id))).conns ?? 0);

describe("pin-device", () => {
  it("the fleet guide's self-test curl reaches the target through exactly the named device", async () => {
    const r = await curl([
      "-x",
      `http://${cred.username(`peer-us-pin-device-${dev.b}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "-w",
      " %{http_code}",
      `http://127.0.0.1:${targets.httpPort}/`,
    ]);
    expect(r.stdout).toBe("hello 200");
  });

  it("every tunnel lands on the pinned device until it is full, then E_NO_CAPACITY names it; never the other device", async () => {
    const heads = [];
    for (let i = 0; i < 5; i++)
      heads.push(await connectVia(cred.username(`peer-${COUNTRY}-pin-device-${dev.b}`)));
    expect(heads.slice(0, 4).every((h) => h.startsWith("HTTP/1.1 200"))).toBe(true);
    expect(heads[4]).toMatch(
      new RegExp(`^HTTP/1\\.1 503[\\s\\S]*E_NO_CAPACITY: device ${dev.b} is at its connection limit`),
    );
    expect(await conns(dev.b)).toBe(4);
    expect(await conns(dev.a)).toBe(0);
    for (const s of sockets.splice(0)) s.destroy();
    await waitUntil(async () => gw.ctx.tunnels.size === 0, 5000, "tunnels closed");
  });

  it.each([
    ["unknown", () => "agent_ffffffff00000000", "is unknown"],
    ["online, not listed", () => dev.c, "is online but not listed"],
    ["in another pool", () => dev.a, "is in pool peer, not mbl"],
  ])("a device %s is refused with E_NO_STOCK naming its state", async (_label, id, state) => {
    const pool = state.includes("pool") ? "mbl" : "peer";
    const head = await connectVia(cred.username(`${pool}-${COUNTRY}-pin-device-${id()}`));
    expect(head).toMatch(new RegExp(`^HTTP/1\\.1 502[\\s\\S]*E_NO_STOCK: device ${id()} ${state}`));
  });

  it("a device that went offline is refused as offline, not routed elsewhere", async () => {
    const gone = relay.newDeviceId();
    // Known to the network (the prober has seen it) but not connected now.
    await redis.hset(keys.probe(gone), { verified: "1" });
    try {
      const head = await connectVia(cred.username(`peer-${COUNTRY}-pin-device-${gone}`));
      expect(head).toMatch(new RegExp(`^HTTP/1\\.1 502[\\s\\S]*E_NO_STOCK: device ${gone} is offline`));
    } finally {
      await redis.del(keys.probe(gone));
    }
  });

  it("pin-device with a session token is a username error naming the token", async () => {
    const head = await connectVia(cred.username(`peer-${COUNTRY}-pin-device-${dev.a}-sid-job12345`));
    expect(head).toMatch(/^HTTP\/1\.1 400[\s\S]*E_USERNAME_PARSE: token "sid"/);
  });
});
