import { createHash, randomBytes } from "node:crypto";
import { request } from "node:http";
import { createServer, connect as rawConnect, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keys } from "../shared/keys.ts";
import { openRelayTunnel } from "../shared/tunnel-open.node.ts";
import { connectPeer, type TestPeer, type TestPeerOptions } from "./testing/peer.ts";
import { startTestRelay, type TestRelay } from "./testing/relay.ts";
import { requestTunnel, type TunnelResult } from "./testing/tunnel-client.ts";

const MiB = 1024 * 1024;
let t: TestRelay;
let echo: Server;
let echoPort: number;
const cleanupKeys: string[] = [];
const servedIds: string[] = [];

function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
  );
}

/** A closed port on loopback: listen, note it, close. */
async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

beforeAll(async () => {
  // COUNTER_FLUSH_MS stays at its default (2 s) so the counter test checks the shipped cadence.
  t = await startTestRelay({ CONNECT_TIMEOUT_MS: "1000" });
  echo = createServer((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  echoPort = await listen(echo);
});

afterAll(async () => {
  if (cleanupKeys.length) await t.redis.del(...cleanupKeys);
  if (servedIds.length) await t.redis.raw.srem(keys.servedDevices(), ...servedIds);
  await t?.close();
  echo?.close();
});

async function devicePeer(opts: Omit<TestPeerOptions, "url" | "token"> = {}, sockets = 1) {
  const id = t.newDeviceId();
  cleanupKeys.push(keys.deviceBytes(id));
  servedIds.push(id);
  const token = await t.token(id);
  const peers: TestPeer[] = [];
  for (let i = 0; i < sockets; i++) {
    const p = await connectPeer({ url: t.relay.wsUrl, token, ...opts });
    await p.waitFor("connected");
    peers.push(p);
  }
  // device_info is processed in order after connected; a heartbeat round trip proves it landed.
  for (const p of peers) {
    p.sendControl("heartbeat");
    await p.waitFor("heartbeat_ack");
  }
  return {
    id,
    peers,
    close: () => {
      for (const p of peers) p.close();
    },
  };
}

function tunnel(deviceId: string, target: string, secret = t.sharedSecret): Promise<TunnelResult> {
  return requestTunnel({ internalUrl: t.relay.internalUrl, secret, deviceId, target });
}

/** Writes bytes and reads the same number back; resolves with what came back. */
function echoThrough(sock: Socket, early: Buffer, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [early];
    let got = early.length;
    sock.on("data", (c: Buffer) => {
      parts.push(c);
      got += c.length;
      if (got >= data.length) resolve(Buffer.concat(parts));
    });
    sock.on("error", reject);
    sock.on("close", () => reject(new Error(`closed after ${got} bytes`)));
    sock.resume();
    sock.write(data);
  });
}

describe("POST /tunnel: 10 MiB round trips to a loopback echo server", () => {
  for (const variant of [
    { name: "binary-v1", opts: { mode: "binary" as const } },
    { name: "legacy JSON/base64", opts: { mode: "legacy" as const } },
    { name: "binary-v1 with flow-v1", opts: { mode: "binary" as const, flow: true } },
  ]) {
    it(`a ${variant.name} peer round-trips 10 MiB with a matching SHA-256`, async () => {
      const dev = await devicePeer(variant.opts, 2);
      const res = await tunnel(dev.id, `127.0.0.1:${echoPort}`);
      expect(res.status).toBe(101);
      if (!res.ok) return;
      const data = randomBytes(10 * MiB);
      const started = Date.now();
      const back = await echoThrough(res.socket, res.early, data);
      const ms = Date.now() - started;
      expect(back.length).toBe(data.length);
      expect(sha(back)).toBe(sha(data));
      console.log(
        `[measure] ${variant.name}: 10 MiB echoed in ${ms} ms (${((20 / ms) * 1000).toFixed(0)} MiB/s both ways)`,
      );
      res.socket.destroy();
      dev.close();
    });
  }

  it("device byte counters in Redis match the bytes both ways within one flush; the device joins devices:served and devices:unsettled", async () => {
    const dev = await devicePeer({ mode: "binary" });
    const res = await tunnel(dev.id, `127.0.0.1:${echoPort}`);
    if (!res.ok) throw new Error(`status ${res.status}`);
    const data = randomBytes(3 * MiB + 17);
    await echoThrough(res.socket, res.early, data);
    res.socket.destroy();
    const started = Date.now();
    await expect
      .poll(() => t.redis.hgetall(keys.deviceBytes(dev.id)), { timeout: 5_000, interval: 100 })
      .toMatchObject({ up: String(data.length), down: String(data.length) });
    // `since` marks when these cumulative counters started (earnings settlement tells restarts by it).
    expect(Number((await t.redis.hgetall(keys.deviceBytes(dev.id))).since)).toBeGreaterThanOrEqual(
      started - 60_000,
    );
    console.log(`[measure] counters visible in Redis ${Date.now() - started} ms after the tunnel ended`);
    expect(await t.redis.raw.sismember(keys.servedDevices(), dev.id)).toBe(1);
    // The earnings cron settles from this set (functions/src/services/earnings.ts).
    expect(await t.redis.raw.sismember(keys.unsettledDevices(), dev.id)).toBe(1);
    dev.close();
  });
});

describe("probe traffic", () => {
  it("the prober's tunnels (X-Traffic: probe) count in metrics but not in the device's earnings counters", async () => {
    const dev = await devicePeer({ mode: "binary" });
    const probeData = randomBytes(MiB + 5);
    const opened = await openRelayTunnel({
      relayInternal: t.relay.internalUrl,
      deviceId: dev.id,
      secret: t.sharedSecret,
      target: { host: "127.0.0.1", port: echoPort },
      timeoutMs: 5_000,
      probe: true,
    });
    if (!opened.ok) throw new Error(`probe tunnel: ${opened.failure}`);
    const before = t.relay.state.metrics.bytesUp;
    await echoThrough(opened.socket, opened.head, probeData);
    opened.socket.destroy();
    expect(t.relay.state.metrics.bytesUp - before).toBeGreaterThanOrEqual(probeData.length);

    // A customer tunnel afterwards: the counters settle at exactly the customer's bytes.
    const customer = randomBytes(1000);
    const res = await tunnel(dev.id, `127.0.0.1:${echoPort}`);
    if (!res.ok) throw new Error(`status ${res.status}`);
    await echoThrough(res.socket, res.early, customer);
    res.socket.destroy();
    await expect
      .poll(() => t.redis.hgetall(keys.deviceBytes(dev.id)), { timeout: 5_000, interval: 100 })
      .toMatchObject({ up: "1000", down: "1000" });
    dev.close();
  });
});

describe("internal port: health and metrics", () => {
  it("GET /health reports ok with the relay id and live counts", async () => {
    const dev = await devicePeer({}, 2);
    const res = await fetch(`${t.relay.internalUrl}/health`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ status: "ok", relayId: t.relay.relayId });
    expect(body.sockets).toBeGreaterThanOrEqual(2);
    dev.close();
  });

  it("GET /metrics exposes sockets by protocol, devices, tunnels, bytes both ways, frame errors, the setup and flush histograms, flush lag and event-loop lag", async () => {
    const dev = await devicePeer({ mode: "binary" });
    const res = await tunnel(dev.id, `127.0.0.1:${echoPort}`);
    if (!res.ok) throw new Error(`status ${res.status}`);
    await echoThrough(res.socket, res.early, Buffer.from("metrics please"));
    dev.peers[0]!.ws.send(Buffer.from([0x01]));
    dev.peers[0]!.sendControl("heartbeat");
    await dev.peers[0]!.waitFor("heartbeat_ack");
    const text = await (await fetch(`${t.relay.internalUrl}/metrics`)).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, "m").exec(text)?.[1] ?? Number.NaN);
    expect(text).toContain("# TYPE relay_sockets gauge");
    expect(value('relay_sockets\\{protocol="binary-v1"\\}')).toBeGreaterThanOrEqual(1);
    expect(text).toMatch(/^relay_sockets\{protocol="flow-v1"\} \d+$/m);
    expect(text).toContain("# TYPE relay_tunnel_setup_seconds histogram");
    expect(value('relay_tunnel_setup_seconds_count\\{result="ok"\\}')).toBeGreaterThanOrEqual(1);
    expect(text).toContain("# TYPE relay_counter_flush_seconds histogram");
    expect(text).toMatch(/^relay_counter_flush_lag_seconds [\d.]+$/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds [\d.e-]+$/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d+$/m);
    expect(value("relay_devices")).toBeGreaterThanOrEqual(1);
    expect(value("relay_tunnels")).toBeGreaterThanOrEqual(1);
    expect(value('relay_bytes_total\\{direction="up"\\}')).toBeGreaterThanOrEqual(14);
    expect(value('relay_bytes_total\\{direction="down"\\}')).toBeGreaterThanOrEqual(14);
    expect(value("relay_frame_errors_total")).toBeGreaterThanOrEqual(1);
    res.socket.destroy();
    dev.close();
  });
});

describe("POST /tunnel: errors", () => {
  it("answers 401 bad_secret to a wrong or missing shared secret", async () => {
    const dev = await devicePeer();
    const wrong = await tunnel(dev.id, `127.0.0.1:${echoPort}`, "wrong-secret-value-000");
    expect(wrong.status).toBe(401);
    expect(!wrong.ok && wrong.body).toEqual({ code: "bad_secret" });
    const missing = await tunnel(dev.id, `127.0.0.1:${echoPort}`, "");
    expect(missing.status).toBe(401);
    expect(dev.peers[0]!.messages.some((m) => m.type === "tunnel_connect")).toBe(false);
    dev.close();
  });

  it("answers 404 device_not_here for a device with no socket on this relay", async () => {
    const res = await tunnel(t.newDeviceId(), `127.0.0.1:${echoPort}`);
    expect(res.status).toBe(404);
    expect(!res.ok && res.body).toEqual({ code: "device_not_here" });
  });

  it("answers 400 to a malformed X-Target", async () => {
    const dev = await devicePeer();
    const res = await tunnel(dev.id, "no-port-here");
    expect(res.status).toBe(400);
    dev.close();
  });

  it("maps tunnel_open_failed to 502 with the peer's reason (connection_refused), logged with the gateway's request id", async () => {
    const dev = await devicePeer();
    const res = await tunnel(dev.id, `127.0.0.1:${await closedPort()}`);
    expect(res.status).toBe(502);
    expect(!res.ok && res.body).toMatchObject({
      code: "tunnel_open_failed",
      reason: "connection_refused",
    });
    const requestId = `req_${crypto.randomUUID().replaceAll("-", "").slice(0, 20)}`;
    const again = await openRelayTunnel({
      relayInternal: t.relay.internalUrl,
      deviceId: dev.id,
      secret: t.sharedSecret,
      target: { host: "127.0.0.1", port: await closedPort() },
      timeoutMs: 5_000,
      requestId,
    });
    expect(again).toMatchObject({ ok: false, failure: "refused", status: 502 });
    const line = t.logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.requestId === requestId);
    expect(line).toMatchObject({
      level: "warn",
      service: "relay",
      msg: "tunnel failed",
      deviceId: dev.id,
      sessionId: expect.stringMatching(/^[0-9a-f]{16}$/),
      reason: "connection_refused",
    });
    dev.close();
  });

  it("maps a peer's blocked_target refusal to 502 blocked_target (the test peer dials loopback only)", async () => {
    const dev = await devicePeer({ mode: "legacy" });
    const res = await tunnel(dev.id, "[fd00::1]:443");
    expect(res.status).toBe(502);
    expect(!res.ok && res.body).toMatchObject({
      code: "tunnel_open_failed",
      reason: "blocked_target",
    });
    const connect = await dev.peers[0]!.waitFor("tunnel_connect");
    expect(connect.payload).toMatchObject({ host: "fd00::1", port: 443 });
    dev.close();
  });

  it("answers 504 connect_timeout when the peer never answers, and tells the peer to drop the session", async () => {
    const dev = await devicePeer({ mode: "legacy", silent: true });
    const started = Date.now();
    const res = await tunnel(dev.id, `127.0.0.1:${echoPort}`);
    expect(res.status).toBe(504);
    expect(!res.ok && res.body).toEqual({ code: "connect_timeout" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    const connect = await dev.peers[0]!.waitFor("tunnel_connect");
    const close = await dev.peers[0]!.waitFor("tunnel_close");
    expect(close.payload.sessionId).toBe(connect.payload.sessionId);
    dev.close();
  });
});

describe("POST /tunnel: lifecycle", () => {
  it("treats a peer that never sends tunnel_connected as open once its data flows", async () => {
    const banner = createServer((s) => {
      s.on("error", () => {});
      s.end("220 hello from a server that speaks first\r\n");
    });
    const port = await listen(banner);
    try {
      const dev = await devicePeer({ mode: "binary", confirm: false });
      const res = await tunnel(dev.id, `127.0.0.1:${port}`);
      expect(res.status).toBe(101);
      if (!res.ok) return;
      const text = await new Promise<string>((resolve) => {
        let got = res.early.toString();
        res.socket.on("data", (c) => {
          got += c.toString();
        });
        res.socket.on("end", () => resolve(got));
        res.socket.resume();
      });
      expect(text).toBe("220 hello from a server that speaks first\r\n");
      expect(dev.peers[0]!.offContract).toEqual([]);
      dev.close();
    } finally {
      banner.close();
    }
  });

  it("24 concurrent 1 MiB tunnels over 4 flow-v1 sockets all arrive intact", async () => {
    const dev = await devicePeer({ mode: "binary", flow: true }, 4);
    const results = await Promise.all(
      Array.from({ length: 24 }, async () => {
        const res = await tunnel(dev.id, `127.0.0.1:${echoPort}`);
        if (!res.ok) throw new Error(`status ${res.status}`);
        const data = randomBytes(1024 * 1024);
        const back = await echoThrough(res.socket, res.early, data);
        res.socket.destroy();
        return sha(back) === sha(data);
      }),
    );
    expect(results.every(Boolean)).toBe(true);
    dev.close();
  });

  it("spreads concurrent tunnels over the device's sockets", async () => {
    const dev = await devicePeer({ mode: "binary" }, 4);
    const opened = await Promise.all(
      Array.from({ length: 8 }, () => tunnel(dev.id, `127.0.0.1:${echoPort}`)),
    );
    for (const r of opened) expect(r.status).toBe(101);
    const perSocket = dev.peers.map((p) => p.messages.filter((m) => m.type === "tunnel_connect").length);
    expect(perSocket).toEqual([2, 2, 2, 2]);
    for (const r of opened) if (r.ok) r.socket.destroy();
    dev.close();
  });

  it("a customer closing its socket sends tunnel_close to a legacy peer and 0x03 to a binary peer", async () => {
    for (const mode of ["legacy", "binary"] as const) {
      const dev = await devicePeer({ mode });
      const res = await tunnel(dev.id, `127.0.0.1:${echoPort}`);
      if (!res.ok) throw new Error(`status ${res.status}`);
      const connect = await dev.peers[0]!.waitFor("tunnel_connect");
      const sid = String(connect.payload.sessionId);
      const binaryCloses: string[] = [];
      dev.peers[0]!.ws.on("message", (d, isBinary) => {
        const b = d as Buffer;
        if (isBinary && b[0] === 0x03) binaryCloses.push(b.subarray(2, 2 + b[1]!).toString());
      });
      res.socket.destroy();
      if (mode === "legacy")
        expect((await dev.peers[0]!.waitFor("tunnel_close")).payload.sessionId).toBe(sid);
      else await expect.poll(() => binaryCloses).toEqual([sid]);
      await expect.poll(() => t.relay.state.sessions.has(sid)).toBe(false);
      dev.close();
    }
  });

  it("a gateway using node:http request() with Upgrade gets the upgraded socket and a working tunnel", async () => {
    const dev = await devicePeer({ mode: "binary", flow: true });
    const { socket, head } = await new Promise<{ socket: Socket; head: Buffer }>((resolve, reject) => {
      const req = request(new URL("/tunnel", t.relay.internalUrl), {
        method: "POST",
        headers: {
          Authorization: `Bearer ${t.sharedSecret}`,
          "X-Device-Id": dev.id,
          "X-Target": `127.0.0.1:${echoPort}`,
          "X-Request-ID": "req_interop",
          Connection: "Upgrade",
          Upgrade: "peerproxy-tunnel/1",
        },
      });
      req.on("upgrade", (_res, sock, h) => resolve({ socket: sock as Socket, head: h }));
      req.on("response", (res) => reject(new Error(`status ${res.statusCode}`)));
      req.on("error", reject);
      req.end();
    });
    const data = randomBytes(512 * 1024);
    const back = await echoThrough(socket, head, data);
    expect(sha(back)).toBe(sha(data));
    socket.destroy();
    dev.close();
  });

  it("a request with a body is refused with 400 (the bytes after the headers are the tunnel)", async () => {
    const dev = await devicePeer();
    const url = new URL(t.relay.internalUrl);
    const text = await new Promise<string>((resolve) => {
      const sock = rawConnect({ host: "127.0.0.1", port: Number(url.port) });
      let got = "";
      sock.on("data", (d) => {
        got += d.toString();
      });
      sock.on("end", () => resolve(got));
      sock.write(
        `POST /tunnel HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.sharedSecret}\r\nX-Device-Id: ${dev.id}\r\n` +
          `X-Target: 127.0.0.1:${echoPort}\r\nConnection: Upgrade\r\nUpgrade: peerproxy-tunnel/1\r\n` +
          "Content-Length: 5\r\n\r\nhello",
      );
    });
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(dev.peers[0]!.messages.some((m) => m.type === "tunnel_connect")).toBe(false);
    dev.close();
  });

  it("prefers sockets that already sent device_info", async () => {
    const id = t.newDeviceId();
    servedIds.push(id);
    const token = await t.token(id);
    const quiet = await connectPeer({ url: t.relay.wsUrl, token, deviceInfo: false });
    await quiet.waitFor("connected");
    const announced = await connectPeer({ url: t.relay.wsUrl, token, mode: "binary" });
    announced.sendControl("heartbeat");
    await announced.waitFor("heartbeat_ack");
    const opened = await Promise.all([1, 2, 3].map(() => tunnel(id, `127.0.0.1:${echoPort}`)));
    for (const r of opened) expect(r.status).toBe(101);
    expect(quiet.messages.some((m) => m.type === "tunnel_connect")).toBe(false);
    expect(announced.messages.filter((m) => m.type === "tunnel_connect")).toHaveLength(3);
    for (const r of opened) if (r.ok) r.socket.destroy();
    quiet.close();
    announced.close();
  });

  it("the peer closing the target ends the customer socket", async () => {
    const closer = createServer((s) => {
      s.on("error", () => {});
      s.once("data", () => s.end("bye"));
    });
    const port = await listen(closer);
    try {
      const dev = await devicePeer({ mode: "legacy" });
      const res = await tunnel(dev.id, `127.0.0.1:${port}`);
      if (!res.ok) throw new Error(`status ${res.status}`);
      const text = await new Promise<string>((resolve) => {
        let got = "";
        res.socket.on("data", (c) => {
          got += c.toString();
        });
        res.socket.on("end", () => resolve(got));
        res.socket.resume();
        res.socket.write("hi");
      });
      expect(text).toBe("bye");
      dev.close();
    } finally {
      closer.close();
    }
  });
});
