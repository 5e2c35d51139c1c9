// The relay's side of the access boundary (issue 16, ADRs 0010 and 0011), on real relays and a real
// Redis: self-dealing earns nothing, revocations close open sockets within seconds, an expiring
// token gets 4002, and the class of the socket's own address wins over the token's.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keys } from "../shared/keys.ts";
import { runScript } from "../shared/lua/script.ts";
import { deviceRevoke } from "../shared/lua/scripts.gen.ts";
import { openRelayTunnel } from "../shared/tunnel-open.node.ts";
import { type EchoServer, startEchoServer } from "./testing/echo.ts";
import { connectPeer, type TestPeer } from "./testing/peer.ts";
import { startTestRelay, type TestRelay } from "./testing/relay.ts";

let t: TestRelay;
let seen: TestRelay;
let echo: EchoServer;
let echoPort: number;
let tableDir: string;
const cleanupKeys: string[] = [];

beforeAll(async () => {
  // The table says loopback belongs to Amazon (a datacenter) in Germany: what a peer claiming a
  // mobile US identity from a cloud box would look like to the relay.
  tableDir = mkdtempSync(join(tmpdir(), "asn-"));
  const table = join(tableDir, "ip2asn.tsv");
  writeFileSync(table, "127.0.0.0\t127.255.255.255\t16509\tDE\tAMAZON-02\n::1\t::1\t16509\tDE\tAMAZON-02\n");
  [t, seen] = await Promise.all([
    startTestRelay({ COUNTER_FLUSH_MS: "200", REVOCATION_SWEEP_MS: "600000" }),
    startTestRelay({ COUNTER_FLUSH_MS: "200", RELAY_ASN_TABLE: table }),
  ]);
  echo = await startEchoServer();
  echoPort = echo.port;
});

afterAll(async () => {
  if (cleanupKeys.length) await t.redis.del(...cleanupKeys);
  await Promise.all([t?.close(), seen?.close()]);
  echo?.close();
  rmSync(tableDir, { recursive: true, force: true });
});

async function device(relay: TestRelay, claims: Record<string, unknown> = {}, sockets = 1) {
  const id = relay.newDeviceId();
  cleanupKeys.push(keys.deviceBytes(id), keys.deviceGen(id), keys.presence(id));
  const token = await relay.token(id, claims);
  const peers: TestPeer[] = [];
  for (let i = 0; i < sockets; i++) {
    const p = await connectPeer({ url: relay.relay.wsUrl, token });
    await p.waitFor("connected");
    p.sendControl("heartbeat");
    await p.waitFor("heartbeat_ack");
    peers.push(p);
  }
  return {
    id,
    peers,
    close: () => {
      for (const p of peers) p.close();
    },
  };
}

function echoThrough(sock: Socket, early: Buffer, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = early.length;
    if (got >= data.length) return resolve();
    sock.on("data", (c: Buffer) => {
      got += c.length;
      if (got >= data.length) resolve();
    });
    sock.on("error", reject);
    sock.resume();
    sock.write(data);
  });
}

async function tunnelFor(relay: TestRelay, deviceId: string, buyerAccountId: string, bytes: number) {
  const opened = await openRelayTunnel({
    relayInternal: relay.relay.internalUrl,
    deviceId,
    secret: relay.sharedSecret,
    target: { host: "127.0.0.1", port: echoPort },
    timeoutMs: 5_000,
    buyerAccountId,
  });
  if (!opened.ok) throw new Error(`tunnel: ${opened.failure}`);
  await echoThrough(opened.socket, opened.head, randomBytes(bytes));
  opened.socket.destroy();
}

const metric = async (relay: TestRelay, name: string) => {
  const text = await (await fetch(`${relay.relay.internalUrl}/metrics`)).text();
  return Number(new RegExp(`^${name.replace(/[{}]/g, "\\$&")} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
};

describe("self-dealing earns nothing", () => {
  it("a credential of the device's own account is carried but adds nothing to the device's earnings counters; another account's does", async () => {
    const dev = await device(t, { acct: "acct_selfdealer" });
    const before = await metric(t, "relay_self_dealing_tunnels_total");
    await tunnelFor(t, dev.id, "acct_selfdealer", 50_000);
    await new Promise((r) => setTimeout(r, 600)); // three flush periods
    expect(await t.redis.hgetall(keys.deviceBytes(dev.id))).toEqual({});
    expect(await metric(t, "relay_self_dealing_tunnels_total")).toBe(before + 1);

    await tunnelFor(t, dev.id, "acct_somebody_else", 1000);
    await expect
      .poll(() => t.redis.hgetall(keys.deviceBytes(dev.id)), { timeout: 5_000, interval: 100 })
      .toMatchObject({ up: "1000", down: "1000" });
    dev.close();
  });
});

describe("revocation reaches open sockets", () => {
  it("a revocation published by the API closes the device's open sockets with 4002 within seconds, and a fresh token connects", async () => {
    const dev = await device(t, { gen: 1 }, 3);
    const started = Date.now();
    // What the API does on re-registration or key revocation (publishDeviceRevocations).
    await runScript(
      t.redis,
      deviceRevoke,
      [keys.deviceGen(dev.id)],
      [2, keys.deviceRevokedChannel(), dev.id],
    );
    const closes = await Promise.all(dev.peers.map((p) => p.closed));
    expect(closes.map((c) => c.code)).toEqual([4002, 4002, 4002]);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(await metric(t, 'relay_sockets_revoked_total{reason="revoked"}')).toBeGreaterThanOrEqual(3);
    const fresh = await connectPeer({ url: t.relay.wsUrl, token: await t.token(dev.id, { gen: 2 }) });
    await fresh.waitFor("connected");
    fresh.close();
  });

  it("without the message, the generation sweep still closes a revoked device's socket", async () => {
    const sweeper = await startTestRelay({ REVOCATION_SWEEP_MS: "300" });
    try {
      const id = sweeper.newDeviceId();
      cleanupKeys.push(keys.deviceGen(id));
      const peer = await connectPeer({
        url: sweeper.relay.wsUrl,
        token: await sweeper.token(id, { gen: 1 }),
      });
      await peer.waitFor("connected");
      await sweeper.redis.set(keys.deviceGen(id), "2"); // no PUBLISH: as if the message was lost
      const closed = await Promise.race([
        peer.closed,
        new Promise<{ code: number }>((r) => setTimeout(() => r({ code: -1 }), 3_000)),
      ]);
      expect(closed.code).toBe(4002);
    } finally {
      await sweeper.close();
    }
  });

  it("a token that expires on an open socket gets 4002 at its expiry", async () => {
    const now = Math.floor(Date.now() / 1000);
    const dev = await device(t, { iat: now, exp: now + 2 });
    const closed = await dev.peers[0]!.closed;
    expect(closed).toMatchObject({ code: 4002, reason: "expired" });
    expect(Date.now() / 1000).toBeGreaterThanOrEqual(now + 1);
  });
});

describe("the class of the socket's own address", () => {
  it("wins over the token's class and country in presence and in the earnings counters; the mismatch is logged and counted", async () => {
    const dev = await device(seen, { ipType: "mobile", geo: "US" });
    await expect
      .poll(() => seen.redis.hgetall(keys.presence(dev.id)), { timeout: 5_000, interval: 100 })
      .toMatchObject({ ipType: "datacenter", country: "DE" });
    expect(await seen.redis.raw.hget(keys.deviceBytes(dev.id), "class")).toBe("datacenter");
    expect(await metric(seen, 'relay_class_mismatch_total{field="ip_type"}')).toBeGreaterThanOrEqual(1);
    expect(await metric(seen, 'relay_class_mismatch_total{field="country"}')).toBeGreaterThanOrEqual(1);
    expect(seen.logs.map((l) => JSON.parse(l))).toContainEqual(
      expect.objectContaining({
        msg: "peer class_mismatch",
        deviceId: dev.id,
        field: "ip_type",
        tokenSays: "mobile",
        seen: "datacenter",
      }),
    );
    // device_info cannot talk the country back.
    dev.peers[0]!.sendControl("device_info", { country: "US" });
    dev.peers[0]!.sendControl("heartbeat");
    await dev.peers[0]!.waitFor("heartbeat_ack");
    expect(seen.relay.state.devices.get(dev.id)?.country).toBe("DE");
    dev.close();
  });

  it("a token that agrees with the address is not counted as a mismatch", async () => {
    const before = await metric(seen, 'relay_class_mismatch_total{field="ip_type"}');
    const dev = await device(seen, { ipType: "datacenter", geo: "DE" });
    expect(await metric(seen, 'relay_class_mismatch_total{field="ip_type"}')).toBe(before);
    dev.close();
  });
});
