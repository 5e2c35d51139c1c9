import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { keys } from "../shared/keys.ts";
import { connectPeer } from "./testing/peer.ts";
import { startTestRelay, type TestRelay } from "./testing/relay.ts";

let t: TestRelay;
let idle: TestRelay;
const cleanupKeys: string[] = [];

beforeAll(async () => {
  [t, idle] = await Promise.all([
    startTestRelay({ RELAY_REGION: "us", REGION_RELAYS: JSON.stringify({ eu: "ws://127.0.0.1:9/eu" }) }),
    startTestRelay({ IDLE_TIMEOUT_MS: "400" }),
  ]);
});

afterAll(async () => {
  if (cleanupKeys.length) await t.redis.del(...cleanupKeys);
  await Promise.all([t?.close(), idle?.close()]);
});

describe("relay peer sockets: auth", () => {
  it("closes a socket that offers no token subprotocol with 4001", async () => {
    const peer = await connectPeer({ url: t.relay.wsUrl, deviceInfo: false });
    expect((await peer.closed).code).toBe(4001);
  });

  it("closes a socket whose subprotocol token is not a JWT with 4001", async () => {
    const peer = await connectPeer({ url: t.relay.wsUrl, token: "not-a-jwt", deviceInfo: false });
    expect((await peer.closed).code).toBe(4001);
  });

  it("closes a socket that carries its token in the URL with 4001, even with a valid subprotocol, and never logs it", async () => {
    const id = t.newDeviceId();
    const token = await t.token(id);
    const inQuery = await connectPeer({ url: `${t.relay.wsUrl}/?token=${token}`, token, deviceInfo: false });
    expect((await inQuery.closed).code).toBe(4001);
    const inPath = await connectPeer({ url: `${t.relay.wsUrl}/${token}`, deviceInfo: false });
    expect((await inPath.closed).code).toBe(4001);
    expect(t.logs.join("\n")).not.toContain(token.split(".")[2]!);
  });

  it("closes a token signed with another secret with 4002", async () => {
    const id = t.newDeviceId();
    const { signJwt } = await import("../shared/jwt.ts");
    const now = Math.floor(Date.now() / 1000);
    const forged = await signJwt(
      { sub: id, acct: "a", kind: "peer", gen: 1, iat: now, exp: now + 60 },
      "some-other-secret-0000",
    );
    const peer = await connectPeer({ url: t.relay.wsUrl, token: forged, deviceInfo: false });
    expect((await peer.closed).code).toBe(4002);
  });

  it("closes an expired token with 4002", async () => {
    const id = t.newDeviceId();
    const now = Math.floor(Date.now() / 1000);
    const token = await t.token(id, { iat: now - 7200, exp: now - 3600 });
    const peer = await connectPeer({ url: t.relay.wsUrl, token, deviceInfo: false });
    expect((await peer.closed).code).toBe(4002);
  });

  it("closes a token whose generation is below the device's current one with 4002 and accepts the current one", async () => {
    const id = t.newDeviceId();
    cleanupKeys.push(keys.deviceGen(id));
    const old = await t.token(id, { gen: 1 });
    // Valid while the key is missing (generation 1)...
    const first = await connectPeer({ url: t.relay.wsUrl, token: old });
    await first.waitFor("connected");
    first.close();
    await first.closed;
    // ...revoked once the API bumps the generation on re-registration.
    await t.redis.set(keys.deviceGen(id), "2");
    const stale = await connectPeer({ url: t.relay.wsUrl, token: old, deviceInfo: false });
    expect((await stale.closed).code).toBe(4002);
    const fresh = await connectPeer({ url: t.relay.wsUrl, token: await t.token(id, { gen: 2 }) });
    await fresh.waitFor("connected");
    fresh.close();
  });

  it("a socket with a newer generation closes the device's sockets that hold an older one with 4002", async () => {
    const id = t.newDeviceId();
    cleanupKeys.push(keys.deviceGen(id));
    const old = await connectPeer({ url: t.relay.wsUrl, token: await t.token(id, { gen: 1 }) });
    await old.waitFor("connected");
    await t.redis.set(keys.deviceGen(id), "2");
    const fresh = await connectPeer({ url: t.relay.wsUrl, token: await t.token(id, { gen: 2 }) });
    await fresh.waitFor("connected");
    expect((await old.closed).code).toBe(4002);
    expect(fresh.ws.readyState).toBe(WebSocket.OPEN);
    fresh.close();
  });

  it("fails closed with 1013 when Redis cannot be asked for the revocation generation", async () => {
    const cut = await startTestRelay();
    try {
      const token = await cut.token(cut.newDeviceId());
      cut.redis.raw.disconnect();
      const peer = await connectPeer({ url: cut.relay.wsUrl, token, deviceInfo: false });
      const closed = await peer.closed;
      expect(closed).toEqual({ code: 1013, reason: "auth_unavailable" });
    } finally {
      await cut.close();
    }
  });

  it("echoes the token subprotocol and sends connected with deviceId, ip and relayId", async () => {
    const id = t.newDeviceId();
    const token = await t.token(id);
    const peer = await connectPeer({ url: t.relay.wsUrl, token });
    expect(peer.protocol).toBe(`token.${token}`);
    const connected = await peer.waitFor("connected");
    expect(connected.payload).toEqual({ deviceId: id, ip: "127.0.0.1", relayId: t.relay.relayId });
    peer.close();
  });
});

describe("relay peer sockets: messages", () => {
  it("answers heartbeats (payload and flat forms) with heartbeat_ack", async () => {
    const peer = await connectPeer({ url: t.relay.wsUrl, token: await t.token(t.newDeviceId()) });
    await peer.waitFor("connected");
    peer.sendControl("heartbeat", { timestamp: Date.now() });
    await peer.waitFor("heartbeat_ack");
    peer.ws.send(JSON.stringify({ type: "heartbeat" }));
    await expect.poll(() => peer.messages.filter((m) => m.type === "heartbeat_ack").length).toBe(2);
    peer.close();
  });

  it("ignores unknown message types, counts and ignores malformed control messages and frames, and keeps the socket open", async () => {
    const id = t.newDeviceId();
    const peer = await connectPeer({ url: t.relay.wsUrl, token: await t.token(id) });
    await peer.waitFor("connected");
    peer.sendControl("heartbeat");
    await peer.waitFor("heartbeat_ack");
    const before = t.relay.state.metrics.frameErrors;
    // Not counted: an unknown type (newer peers may send more) and an unknown binary type byte.
    peer.sendText(JSON.stringify({ type: "from_the_future", payload: { x: 1 } }));
    peer.ws.send(Buffer.from([0x7e, 0x01, 0x61, 0x00]));
    // Counted: text that is no control message, known types with malformed fields (the union in
    // shared/messages.ts), malformed binary frames.
    peer.sendText("not json at all");
    peer.sendText(JSON.stringify({ type: "tunnel_connected", payload: { sessionId: 7 } }));
    peer.sendText(
      JSON.stringify({ type: "device_info", payload: { protocol: "json", capabilities: "flow-v1" } }),
    );
    peer.ws.send(Buffer.from([0x01]));
    peer.ws.send(Buffer.from([0x01, 0x00, 0x09]));
    peer.ws.send(Buffer.from([0x01, 0x09, 0x61]));
    peer.sendControl("heartbeat");
    await expect.poll(() => peer.messages.filter((m) => m.type === "heartbeat_ack").length).toBe(2);
    expect(t.relay.state.metrics.frameErrors - before).toBe(6);
    expect(peer.ws.readyState).toBe(WebSocket.OPEN);
    // The malformed device_info changed nothing: the socket still speaks binary-v1.
    expect(t.relay.state.devices.get(id)?.protocol).toBe("binary-v1");
    expect(peer.offContract).toEqual([]);
    peer.close();
  });

  it("closes a socket that sends a frame over 4 MiB (1009)", async () => {
    const peer = await connectPeer({ url: t.relay.wsUrl, token: await t.token(t.newDeviceId()) });
    await peer.waitFor("connected");
    const big = Buffer.alloc(4 * 1024 * 1024 + 1);
    big[0] = 1;
    big[1] = 1;
    peer.ws.send(big);
    expect((await peer.closed).code).toBe(1009);
  });

  it("accepts 8 sockets for one device and refuses a 9th with 1008", async () => {
    const id = t.newDeviceId();
    const token = await t.token(id);
    const peers = [];
    for (let i = 0; i < 8; i++) {
      const p = await connectPeer({ url: t.relay.wsUrl, token });
      await p.waitFor("connected");
      peers.push(p);
    }
    const ninth = await connectPeer({ url: t.relay.wsUrl, token, deviceInfo: false });
    const closed = await ninth.closed;
    expect(closed.code).toBe(1008);
    expect(closed.reason).toBe("too_many_sockets");
    expect(t.relay.state.devices.get(id)?.conns.size).toBe(8);
    for (const p of peers) expect(p.ws.readyState).toBe(WebSocket.OPEN);
    for (const p of peers) p.close();
  });

  it("sends relay_redirect to the socket that supports it when the device is pinned to another region, and not to others", async () => {
    const id = t.newDeviceId();
    await t.redis.raw.hset(keys.deviceRegionOverride(), id, "eu");
    try {
      const token = await t.token(id);
      const old = await connectPeer({ url: t.relay.wsUrl, token, supportsRelayRedirect: false });
      const modern = await connectPeer({ url: t.relay.wsUrl, token, supportsRelayRedirect: true });
      const redirect = await modern.waitFor("relay_redirect");
      expect(redirect.payload).toEqual({ relay: "ws://127.0.0.1:9/eu", reason: "geo" });
      old.sendControl("heartbeat");
      await old.waitFor("heartbeat_ack");
      expect(old.messages.some((m) => m.type === "relay_redirect")).toBe(false);
      old.close();
      modern.close();
    } finally {
      await t.redis.raw.hdel(keys.deviceRegionOverride(), id);
    }
  });

  it("sends no relay_redirect when the pinned region is this relay's own", async () => {
    const id = t.newDeviceId();
    await t.redis.raw.hset(keys.deviceRegionOverride(), id, "us");
    try {
      const peer = await connectPeer({
        url: t.relay.wsUrl,
        token: await t.token(id),
        supportsRelayRedirect: true,
      });
      await peer.waitFor("connected");
      peer.sendControl("heartbeat");
      await peer.waitFor("heartbeat_ack");
      await new Promise((r) => setTimeout(r, 100));
      expect(peer.messages.some((m) => m.type === "relay_redirect")).toBe(false);
      peer.close();
    } finally {
      await t.redis.raw.hdel(keys.deviceRegionOverride(), id);
    }
  });
});

describe("relay peer sockets: idle", () => {
  it("closes a socket that sends no frame within IDLE_TIMEOUT_MS, and keeps one that heartbeats", async () => {
    // Taken before connecting: the silent socket's idle clock starts at its last frame, never earlier.
    const started = Date.now();
    const silent = await connectPeer({ url: idle.relay.wsUrl, token: await idle.token(idle.newDeviceId()) });
    const chatty = await connectPeer({ url: idle.relay.wsUrl, token: await idle.token(idle.newDeviceId()) });
    const beat = setInterval(() => chatty.sendControl("heartbeat"), 100);
    try {
      const closed = await silent.closed;
      const after = Date.now() - started;
      expect(closed.code).toBe(1000);
      expect(after).toBeGreaterThanOrEqual(350);
      expect(after).toBeLessThan(3000);
      await new Promise((r) => setTimeout(r, 600));
      expect(chatty.ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      clearInterval(beat);
      chatty.close();
    }
  });
});
