// Self-dealing end to end (issue 16 item 2, ADR 0010): curl -> gateway-node -> relay -> a peer of
// the buyer's own account earns nothing; the same traffic from another account's credential earns.
import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGatewayConfig } from "../gateway-node/config.ts";
import { type Gateway, startGateway } from "../gateway-node/gateway.ts";
import { curlStatusAndSize, listPeer, makeCredential } from "../gateway-node/testing.ts";
import { connectPeer, type TestPeer } from "../relay-node/testing/peer.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { stateEnv } from "./helpers/env.ts";

// A country code no other test uses, so the gateway can only pick this file's peer.
const country = `q${"abcdefghijklmnopqrstuvwxyz"[Math.floor(Math.random() * 26)]}`;
let relay: TestRelay;
let gw: Gateway;
let target: Server;
let targetPort: number;
let peer: TestPeer;
const deviceId = `agent_${randomHex(8)}`;
const BODY = Buffer.alloc(64 * 1024, 7);

beforeAll(async () => {
  relay = await startTestRelay({ COUNTER_FLUSH_MS: "200" });
  gw = await startGateway(
    loadGatewayConfig({
      REDIS_URL: stateEnv().REDIS_URL,
      RELAY_SHARED_SECRET: relay.sharedSecret,
      GATEWAY_HTTP_PORT: "0",
      GATEWAY_SOCKS_PORT: "0",
      GATEWAY_ADMIN_PORT: "0",
      GATEWAY_ALLOW_PRIVATE_TARGETS: "1",
    }),
    { redis: relay.redis },
  );
  target = createServer((_req, res) => res.end(BODY));
  targetPort = await new Promise<number>((r) =>
    target.listen(0, "127.0.0.1", () => r((target.address() as { port: number }).port)),
  );
});

afterAll(async () => {
  await delistEndpoint(relay.redis, deviceId).catch(() => {});
  await relay.redis.del(keys.deviceBytes(deviceId), keys.presence(deviceId));
  peer?.close();
  await gw?.close();
  await relay?.close();
  target?.close();
});

/** Connects the device under `accountId` and lists it in this file's country. */
async function serveAs(accountId: string) {
  peer = await connectPeer({
    url: relay.relay.wsUrl,
    token: await relay.token(deviceId, { acct: accountId }),
  });
  await peer.waitFor("connected");
  peer.sendControl("heartbeat");
  await peer.waitFor("heartbeat_ack");
  await listPeer(relay.redis, { deviceId, country, relayInternal: relay.relay.internalUrl });
}

async function fetchThroughGateway(cred: Awaited<ReturnType<typeof makeCredential>>) {
  const got = await curlStatusAndSize(
    `http://${cred.username(`peer-${country}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
    `http://127.0.0.1:${targetPort}/`,
  );
  expect(got).toBe(`200 ${BODY.length}`);
}

const counted = async () => {
  const h = await relay.redis.hgetall(keys.deviceBytes(deviceId));
  return Number(h.up ?? 0) + Number(h.down ?? 0);
};

describe("self-dealing through the real gateway", () => {
  it("a credential of the device's own account is served but earns nothing; another account's credential earns", async () => {
    const own = await makeCredential(relay.redis);
    const ownAccount = (await relay.redis.hgetall(keys.credential(own.keyId))).accountId!;
    await serveAs(ownAccount);

    await fetchThroughGateway(own);
    await new Promise((r) => setTimeout(r, 600)); // three relay flush periods
    expect(await counted()).toBe(0);
    expect(relay.relay.state.metrics.selfDealingTunnels).toBeGreaterThanOrEqual(1);

    const stranger = await makeCredential(relay.redis);
    await fetchThroughGateway(stranger);
    await expect.poll(counted, { timeout: 5_000, interval: 100 }).toBeGreaterThanOrEqual(BODY.length);
  });
});
