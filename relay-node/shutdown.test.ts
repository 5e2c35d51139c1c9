import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProcess } from "../dev/proc.ts";
import { randomHex } from "../shared/ids.ts";
import { keys } from "../shared/keys.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { startRelayProcess } from "../test/helpers/relay.ts";
import { type EchoServer, startEchoServer } from "./testing/echo.ts";
import { connectPeer } from "./testing/peer.ts";
import { startTestRelay } from "./testing/relay.ts";
import { requestTunnel } from "./testing/tunnel-client.ts";

let redis: TcpRedis;
let echo: EchoServer;
let echoPort: number;

beforeAll(async () => {
  redis = tcpRedis(stateEnv().REDIS_URL);
  echo = await startEchoServer();
  echoPort = echo.port;
});

afterAll(async () => {
  await redis?.close();
  echo?.close();
});

describe("graceful shutdown", () => {
  it("close() sends 1001 to every peer socket and removes presence and the relay record", async () => {
    const t = await startTestRelay();
    const id = t.newDeviceId();
    const token = await t.token(id);
    const peers = await Promise.all([1, 2, 3].map(() => connectPeer({ url: t.relay.wsUrl, token })));
    for (const p of peers) await p.waitFor("connected");
    await expect.poll(async () => (await redis.hgetall(keys.presence(id))).sockets).toBe("3");
    await t.close();
    for (const p of peers) expect((await p.closed).code).toBe(1001);
    expect(await redis.hgetall(keys.presence(id))).toEqual({});
    expect(await redis.hgetall(keys.relayInfo(t.relay.relayId))).toEqual({});
  });

  it("close() lets an open tunnel finish, answers new tunnels 503 draining, then closes peers", async () => {
    const t = await startTestRelay({ DRAIN_TIMEOUT_MS: "5000" });
    const id = t.newDeviceId();
    const peer = await connectPeer({ url: t.relay.wsUrl, token: await t.token(id) });
    await peer.waitFor("connected");
    const open = await requestTunnel({
      internalUrl: t.relay.internalUrl,
      secret: t.sharedSecret,
      deviceId: id,
      target: `127.0.0.1:${echoPort}`,
    });
    if (!open.ok) throw new Error(`status ${open.status}`);
    const closing = t.close();
    const refused = await requestTunnel({
      internalUrl: t.relay.internalUrl,
      secret: t.sharedSecret,
      deviceId: id,
      target: `127.0.0.1:${echoPort}`,
    });
    expect(refused.status).toBe(503);
    expect(!refused.ok && refused.body).toEqual({ code: "draining" });
    // The open tunnel still carries bytes while draining.
    const back = await new Promise<string>((resolve) => {
      open.socket.once("data", (c) => resolve(c.toString()));
      open.socket.resume();
      open.socket.write("still here");
    });
    expect(back).toBe("still here");
    expect(peer.ws.readyState).toBe(peer.ws.OPEN);
    const started = Date.now();
    open.socket.end();
    await closing;
    expect(Date.now() - started).toBeLessThan(3_000);
    expect((await peer.closed).code).toBe(1001);
  });

  it("SIGTERM makes the relay process send 1001 to its peers and exit 0", async () => {
    const relay = await startRelayProcess({ RELAY_ID: `relay_term_${randomHex(4)}` });
    expect(relay.wsUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
    expect(relay.internalUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const id = `agent_${randomHex(8)}`;
    const token = await relay.token(id, { acct: "acct_term" });
    const peer = await connectPeer({ url: relay.wsUrl, token });
    await peer.waitFor("connected");
    const health = await fetch(`${relay.internalUrl}/health`);
    expect(health.status).toBe(200);
    const code = await relay.stop("SIGTERM");
    expect(code).toBe(0);
    expect((await peer.closed).code).toBe(1001);
    expect(await redis.hgetall(keys.presence(id))).toEqual({});
    expect(relay.service.output()).not.toContain(token);
  });

  it("a relay with a missing JWT_SECRET exits 2 with a message naming the variable", async () => {
    const svc = startProcess("relay-badconfig", process.execPath, ["relay-node/main.ts"], {
      cwd: `${import.meta.dirname}/..`,
      env: { REDIS_URL: stateEnv().REDIS_URL, JWT_SECRET: "", RELAY_SHARED_SECRET: `rss-${randomHex(16)}` },
    });
    expect(await svc.exited).toBe(2);
    expect(svc.output()).toMatch(/JWT_SECRET/);
  });
});
