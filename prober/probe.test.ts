import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, waitUntil } from "../dev/proc.ts";
import { type Modem, startTinyproxy } from "../gateway-node/testing.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { type ProbeExit, type ProbeOptions, probeExit, speedTierFor } from "./probe.ts";
import { type ProbeTarget, startProbeTarget } from "./target.ts";
import { type FaultPeer, type PeerFault, startFaultPeer } from "./testing/fault-peer.ts";

let relay: TestRelay;
let target: ProbeTarget;
let opts: ProbeOptions;
const peers: FaultPeer[] = [];

beforeAll(async () => {
  relay = await startTestRelay();
  target = await startProbeTarget();
  opts = {
    target: { host: target.host, port: target.port, caPem: target.caPem, pathTemplate: "/bytes/{n}" },
    relaySecret: relay.sharedSecret,
    connectTimeoutMs: 3_000,
    tlsTimeoutMs: 1_500,
    stallMs: 1_000,
    overallTimeoutMs: 8_000,
    initialBytes: 16 * 1024,
    maxBytes: 4 * 1024 * 1024,
    transferTargetMs: 300,
    minBytesForSpeed: 256 * 1024,
    fastKBps: 2048,
    mediumKBps: 512,
  };
});

afterAll(async () => {
  await Promise.all(peers.map((p) => p.close()));
  await relay?.close();
  await target?.stop();
});

async function peerExit(fault: PeerFault): Promise<{ peer: FaultPeer; exit: ProbeExit; deviceId: string }> {
  const deviceId = relay.newDeviceId();
  const peer = await startFaultPeer({ url: relay.relay.wsUrl, token: await relay.token(deviceId), fault });
  peers.push(peer);
  await waitUntil(async () => relay.relay.state.devices.has(deviceId), 5_000, "the fault peer to be online");
  return { peer, deviceId, exit: { kind: "peer", deviceId, relayInternal: relay.relay.internalUrl } };
}

describe("probe v2 through a real relay", () => {
  it("a well-behaved peer passes with a TLS handshake inside the tunnel and a measured throughput", async () => {
    const { exit, deviceId } = await peerExit("good");
    const r = await probeExit(deviceId, exit, opts);
    console.log("good peer probe:", JSON.stringify(r));
    expect(r).toMatchObject({ endpointId: deviceId, probeMode: "connect_v2", ok: true });
    expect(r.failureReason).toBeUndefined();
    expect(r.tlsHandshakeMs).toBeGreaterThanOrEqual(0);
    expect(r.throughputKBps).toBeGreaterThan(0);
    expect(r.speedTier).not.toBe("unknown");
    expect(r.bytes).toBeGreaterThanOrEqual(opts.minBytesForSpeed);
  });

  it("a peer that drops the TLS ClientHello fails with tls_dropped_before_hello though it opens tunnels and forwards plain HTTP", async () => {
    const { exit, deviceId } = await peerExit("drop_on_client_hello");
    // What a plain HTTP-forward probe sees: the same exit fetches a plain-HTTP page fine.
    const plain = createServer((_q, s) => s.end("plain ok"));
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", () => r()));
    const plainPort = (plain.address() as AddressInfo).port;
    const plainBody = await new Promise<string>((resolve, reject) => {
      const req = request(new URL("/tunnel", relay.relay.internalUrl), {
        method: "POST",
        headers: {
          Authorization: `Bearer ${relay.sharedSecret}`,
          "X-Device-Id": deviceId,
          "X-Target": `127.0.0.1:${plainPort}`,
          Connection: "Upgrade",
          Upgrade: "peerproxy-tunnel/1",
        },
      });
      req.on("upgrade", (_res, sock) => {
        let text = "";
        sock.on("data", (d: Buffer) => {
          text += d.toString();
        });
        sock.on("end", () => resolve(text));
        sock.on("error", reject);
        sock.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      });
      req.on("error", reject);
      req.end();
    });
    plain.close();
    expect(plainBody).toContain("plain ok");

    const r = await probeExit(deviceId, exit, opts);
    expect(r.ok).toBe(false);
    expect(r.failureReason).toBe("tls_dropped_before_hello");
    expect(r.speedTier).toBe("unknown");
  });

  it("a peer that swallows the handshake fails with tls_handshake_timeout", async () => {
    const { exit, deviceId } = await peerExit("blackhole");
    const r = await probeExit(deviceId, exit, opts);
    expect(r).toMatchObject({ ok: false, failureReason: "tls_handshake_timeout" });
  });

  it("a peer that stalls after a few KiB passes the handshake and fails with body_stalled", async () => {
    const { exit, deviceId } = await peerExit("stall_after_kib");
    const r = await probeExit(deviceId, exit, opts);
    expect(r).toMatchObject({ ok: false, failureReason: "body_stalled" });
    expect(r.tlsHandshakeMs).toBeGreaterThanOrEqual(0);
    expect(r.throughputKBps).toBeUndefined();
  });

  it("no presence, a device on no relay, and a refused target each get their own code", async () => {
    expect((await probeExit("agent_gone", null, opts)).failureReason).toBe("no_exit_ip");
    const elsewhere = await probeExit(
      "agent_x",
      { kind: "peer", deviceId: relay.newDeviceId(), relayInternal: relay.relay.internalUrl },
      opts,
    );
    expect(elsewhere.failureReason).toBe("no_exit_ip");
    const { exit, deviceId } = await peerExit("good");
    const closedPort = await freePort();
    const refused = await probeExit(deviceId, exit, {
      ...opts,
      target: { ...opts.target, port: closedPort },
    });
    expect(refused.failureReason).toBe("connect_refused");
  });

  it("a target certificate that does not chain to the configured CA fails with tls_cert_invalid", async () => {
    const other = await startProbeTarget();
    try {
      const { exit, deviceId } = await peerExit("good");
      const r = await probeExit(deviceId, exit, { ...opts, target: { ...opts.target, caPem: other.caPem } });
      expect(r.failureReason).toBe("tls_cert_invalid");
    } finally {
      await other.stop();
    }
  });

  it("a short transfer reports no throughput and speedTier unknown", async () => {
    const { exit, deviceId } = await peerExit("good");
    const r = await probeExit(deviceId, exit, { ...opts, maxBytes: 32 * 1024 });
    expect(r.ok).toBe(true);
    expect(r.throughputKBps).toBeUndefined();
    expect(r.speedTier).toBe("unknown");
  });
});

describe("probe v2 through a modem-style HTTP CONNECT exit (tinyproxy)", () => {
  let modem: Modem;
  beforeAll(async () => {
    modem = await startTinyproxy();
  });
  afterAll(async () => {
    await modem?.stop();
  });

  it("a healthy modem passes and a dead modem port fails with connect_refused", async () => {
    const ok = await probeExit("modem_ok", { kind: "modem", host: "127.0.0.1", port: modem.port }, opts);
    expect(ok).toMatchObject({ ok: true, probeMode: "connect_v2" });
    expect(ok.throughputKBps).toBeGreaterThan(0);
    const dead = await probeExit(
      "modem_dead",
      { kind: "modem", host: "127.0.0.1", port: await freePort() },
      opts,
    );
    expect(dead.failureReason).toBe("connect_refused");
  });
});

describe("speedTierFor", () => {
  it.each([
    [undefined, "unknown"],
    [100, "slow"],
    [512, "medium"],
    [2047, "medium"],
    [2048, "fast"],
  ] as const)("%s KB/s is %s", (kbps, tier) => {
    expect(speedTierFor(kbps, { fastKBps: 2048, mediumKBps: 512 })).toBe(tier);
  });
});
