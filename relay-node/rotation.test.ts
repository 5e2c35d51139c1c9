// Secret rotation without dropping the fleet (docs/deploy.md): while a relay carries the previous
// JWT_SECRET and RELAY_SHARED_SECRET beside the new ones, peers whose JWTs the API signed with the
// old secret still connect and gateways still holding the old shared secret still open tunnels;
// anything signed with neither is refused as before.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomHex } from "../shared/ids.ts";
import { type EchoServer, startEchoServer } from "./testing/echo.ts";
import { connectPeer } from "./testing/peer.ts";
import { peerToken, startTestRelay, type TestRelay } from "./testing/relay.ts";
import { requestTunnel } from "./testing/tunnel-client.ts";

const oldJwt = `old-jwt-${randomHex(12)}`;
const oldShared = `old-rss-${randomHex(12)}`;
let t: TestRelay;
let echo: EchoServer;
let echoPort: number;

beforeAll(async () => {
  t = await startTestRelay({ JWT_SECRET_PREVIOUS: oldJwt, RELAY_SHARED_SECRET_PREVIOUS: oldShared });
  echo = await startEchoServer();
  echoPort = echo.port;
});

afterAll(async () => {
  await t?.close();
  echo?.close();
});

describe("secret rotation", () => {
  it("a peer JWT signed with JWT_SECRET_PREVIOUS connects; one signed with an unknown secret gets 4002", async () => {
    const id = t.newDeviceId();
    const peer = await connectPeer({ url: t.relay.wsUrl, token: await peerToken(id, oldJwt) });
    await peer.waitFor("connected");
    peer.close();
    const stranger = await connectPeer({
      url: t.relay.wsUrl,
      token: await peerToken(t.newDeviceId(), `unknown-${randomHex(12)}`),
    });
    expect((await stranger.closed).code).toBe(4002);
  });

  it("a tunnel request with RELAY_SHARED_SECRET_PREVIOUS is served; an unknown secret is 401", async () => {
    const id = t.newDeviceId();
    const peer = await connectPeer({ url: t.relay.wsUrl, token: await t.token(id) });
    await peer.waitFor("connected");
    try {
      const base = { internalUrl: t.relay.internalUrl, deviceId: id, target: `127.0.0.1:${echoPort}` };
      const old = await requestTunnel({ ...base, secret: oldShared });
      expect(old.status).toBe(101);
      if (old.ok) old.socket.destroy();
      const bad = await requestTunnel({ ...base, secret: `unknown-${randomHex(12)}` });
      expect(bad.status).toBe(401);
    } finally {
      peer.close();
    }
  });
});
