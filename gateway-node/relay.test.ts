// One end-to-end path through a real relay (relay-node, in-process) and its protocol test peer:
// customer curl -> gateway -> relay internal POST /tunnel -> WebSocket peer -> loopback target.
import { randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStream } from "../bench/measure.ts";
import { waitUntil } from "../dev/proc.ts";
import { connectPeer, type TestPeer } from "../relay-node/testing/peer.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { loadGatewayConfig } from "./config.ts";
import { type Gateway, startGateway } from "./gateway.ts";
import { curl, listPeer, makeCredential, startTargets, type Targets, testGatewayEnv } from "./testing.ts";

const COUNTRY = "qr";
const redis = tcpRedis(stateEnv().REDIS_URL);
let relay: TestRelay;
let peer: TestPeer;
let targets: Targets;
let gw: Gateway;
let deviceId: string;

beforeAll(async () => {
  [relay, targets] = await Promise.all([startTestRelay({ COUNTER_FLUSH_MS: "500" }), startTargets()]);
  deviceId = relay.newDeviceId();
  peer = await connectPeer({ url: relay.relay.wsUrl, token: await relay.token(deviceId) });
  await peer.waitFor("connected");
  peer.sendControl("heartbeat");
  await peer.waitFor("heartbeat_ack");
  await listPeer(redis, { deviceId, country: COUNTRY, relayInternal: relay.relay.internalUrl });
  gw = await startGateway(
    loadGatewayConfig(
      testGatewayEnv({ RELAY_SHARED_SECRET: relay.sharedSecret, GATEWAY_STALL_REPORT_MS: "600" }),
    ),
    { redis },
  );
});

afterAll(async () => {
  await gw?.close();
  await delistEndpoint(redis, deviceId);
  peer?.close();
  await relay?.close();
  await targets?.stop();
  await redis.del(keys.deviceBytes(deviceId));
  await redis.close();
});

describe("gateway through a real relay and peer", () => {
  it("curl via HTTP CONNECT and SOCKS5 reaches the target through the peer; the relay counts the device's bytes and the credential is billed within 1%", async () => {
    const cred = await makeCredential(redis);
    const size = 512 * 1024;
    const url = `http://127.0.0.1:${targets.httpPort}/bytes/${size}`;
    const viaHttp = await curl([
      "-x",
      `http://${cred.username(`peer-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "-p",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download}",
      url,
    ]);
    expect(viaHttp.stderr).toBe("");
    expect(viaHttp.stdout).toBe(`200 ${size}`);
    const viaSocks = await curl([
      "--socks5-hostname",
      `127.0.0.1:${gw.socksPort}`,
      "--proxy-user",
      `${cred.username(`peer-${COUNTRY}`)}:${cred.secret}`,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download}",
      url,
    ]);
    expect(viaSocks.stdout).toBe(`200 ${size}`);

    await waitUntil(async () => gw.ctx.tunnels.size === 0, 10_000, "tunnels closed");
    const billed = Number(await redis.get(keys.credentialUsed(cred.keyId)));
    expect(billed).toBeGreaterThanOrEqual(2 * size);
    expect(billed).toBeLessThanOrEqual(2 * size * 1.01);
    const device = await waitUntil(
      async () => {
        const h = await redis.hgetall(keys.deviceBytes(deviceId));
        return Number(h.up ?? 0) >= 2 * size ? h : undefined;
      },
      10_000,
      "relay device counter",
    );
    console.log(`billed ${billed} bytes; relay counted up=${device.up} down=${device.down}`);
  });

  it("CONNECT downloads and forward-proxy GETs side by side, customers reading in fits: every body arrives intact", async () => {
    // The relay leg reads into pooled buffers that go back once written to the customer (ADR 0028):
    // downloads side by side, one customer stalled until its writes wait in the gateway, and the
    // forward proxy's in-memory pair (which gets copies) must each get exactly their own bytes.
    const cred = await makeCredential(redis);
    const bodies = new Map<string, Buffer>();
    const target = createServer((s) => {
      s.on("error", () => {});
      s.once("data", (d: Buffer) => {
        const path = /^GET (\S+)/.exec(d.toString("latin1"))?.[1] ?? "?";
        // /stall-* bodies outgrow what loopback's socket buffers hold for a customer that is not reading
        const body = randomBytes((path.includes("stall") ? 12 : 4) * 1024 * 1024 + 123);
        bodies.set(new URL(path, "http://x").pathname, body);
        s.end(
          Buffer.concat([
            Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`),
            body,
          ]),
        );
      });
    });
    await new Promise<void>((r) => target.listen(0, "127.0.0.1", r));
    const port = (target.address() as AddressInfo).port;
    const user = cred.username(`peer-${COUNTRY}`);
    try {
      const viaConnect = async (path: string) => {
        const sock = await connectThrough(user, cred.secret, `127.0.0.1:${port}`);
        const got: Buffer[] = [];
        const done = new Promise<void>((resolve, reject) => {
          sock.on("error", reject);
          sock.on("close", () => resolve());
        });
        // Reads in fits, with a long first stall: the kernel's buffers fill, the gateway's writes to
        // this customer wait with their chunks, and the other downloads' reads go on meanwhile.
        sock.on("data", (d: Buffer) => {
          got.push(d);
          const first = got.length === 1;
          if (first || Math.random() < 0.1) {
            sock.pause();
            setTimeout(() => sock.resume(), first && path.includes("stall") ? 800 : 5);
          }
        });
        sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
        await done;
        const all = Buffer.concat(got);
        return { path, body: all.subarray(all.indexOf("\r\n\r\n") + 4) };
      };
      const viaForward = (path: string) =>
        new Promise<{ path: string; body: Buffer }>((resolve, reject) => {
          const req = httpRequest(
            {
              host: "127.0.0.1",
              port: gw.httpPort,
              path: `http://127.0.0.1:${port}${path}`,
              headers: {
                "Proxy-Authorization": `Basic ${Buffer.from(`${user}:${cred.secret}`).toString("base64")}`,
              },
            },
            (res) => {
              const got: Buffer[] = [];
              res.on("data", (d: Buffer) => got.push(d));
              res.on("end", () => resolve({ path, body: Buffer.concat(got) }));
              res.on("error", reject);
            },
          );
          req.on("error", reject);
          req.end();
        });
      // A fast peer takes four tunnels at once (shared/pool.ts CAPS): two rounds of four.
      const results = [];
      for (const round of [0, 1])
        results.push(
          ...(await Promise.all([
            viaConnect(`/stall-${round}`),
            ...[1, 2].map((i) => viaConnect(`/c${round}-${i}`)),
            viaForward(`/f${round}`),
          ])),
        );
      expect(results).toHaveLength(8);
      for (const r of results) {
        const sent = bodies.get(r.path);
        expect(r.body.length, r.path).toBe(sent?.length);
        expect(r.body.equals(sent!), r.path).toBe(true);
      }
    } finally {
      target.close();
    }
  });
});

/** Reports the gateway pushed for the circuit breaker about one endpoint (the list is shared). */
async function reportsFor(endpointId: string): Promise<string[]> {
  const all = await redis.raw.lrange(keys.tunnelFailures(), 0, -1);
  return all
    .map((raw) => JSON.parse(raw) as { endpointId: string; reason: string })
    .filter((r) => r.endpointId === endpointId)
    .map((r) => r.reason);
}

/** Opens a CONNECT tunnel through the gateway by hand and returns the raw socket after the 200. */
async function connectThrough(user: string, pass: string, target: string): Promise<Socket> {
  const sock = connect(gw.httpPort, "127.0.0.1");
  const auth = Buffer.from(`${user}:${pass}`).toString("base64");
  sock.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`);
  const head = await new Promise<string>((resolve, reject) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString("latin1");
      if (buf.includes("\r\n\r\n")) {
        sock.off("data", onData);
        resolve(buf);
      }
    };
    sock.on("data", onData);
    sock.once("error", reject);
  });
  expect(head).toMatch(/^HTTP\/1\.1 200/);
  return sock;
}

describe("mid-stream failures are reported for the circuit breaker", () => {
  const country = "qt";
  let device: string;
  let faulty: TestPeer;
  let silent: Server;
  const held: Socket[] = [];

  beforeAll(async () => {
    device = relay.newDeviceId();
    faulty = await connectPeer({ url: relay.relay.wsUrl, token: await relay.token(device) });
    await faulty.waitFor("connected");
    await listPeer(redis, { deviceId: device, country, relayInternal: relay.relay.internalUrl });
    // A target that accepts and never answers: what "accepts tunnels but drops bytes" looks like.
    silent = createServer((s) => {
      held.push(s);
      s.on("error", () => {});
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  });

  afterAll(async () => {
    for (const s of held) s.destroy();
    await new Promise((r) => silent.close(r));
    await delistEndpoint(redis, device);
    faulty.close();
    await redis.del(keys.deviceBytes(device));
  });

  it("an answer written in two parts reaches SOCKS5 and CONNECT customers at once: no customer socket runs Nagle's algorithm", async () => {
    // Through our own hops only (a modem's proxy is the modem's business: tinyproxy holds the second
    // part this way). Many servers answer in two writes (head, then body). A hop that runs Nagle's algorithm holds
    // the second until the customer acknowledges the first, and a customer's kernel delays that
    // acknowledgement by 40 ms or more: every answer would wait that long. Without Nagle a round
    // trip here takes a few ms; the median of eight stays far below 40 ms on a loaded machine.
    const target = createServer((s) => {
      s.setNoDelay(true);
      s.on("data", () => {
        s.write("h".repeat(100));
        setTimeout(() => s.writable && s.write("b".repeat(100)), 2);
      });
    });
    await new Promise<void>((r) => target.listen(0, "127.0.0.1", r));
    const targetPort = (target.address() as AddressInfo).port;
    const cred = await makeCredential(redis);
    const username = cred.username(`peer-${COUNTRY}`);
    try {
      for (const route of [
        { kind: "http-connect", port: gw.httpPort, auth: `${username}:${cred.secret}` },
        { kind: "socks5", port: gw.socksPort, auth: { username, password: cred.secret } },
      ] as const) {
        const sock = await openStream(route, { host: "127.0.0.1", port: targetPort });
        const rounds: number[] = [];
        for (let i = 0; i < 8; i++) {
          const t0 = performance.now();
          await new Promise<void>((resolve, reject) => {
            let got = 0;
            const onData = (d: Buffer) => {
              got += d.length;
              if (got < 200) return;
              sock.off("data", onData);
              resolve();
            };
            sock.on("data", onData);
            sock.once("error", reject);
            sock.write("q");
          });
          rounds.push(performance.now() - t0);
        }
        sock.destroy();
        rounds.sort((a, b) => a - b);
        expect(
          rounds[4],
          `${route.kind} round trips (ms): ${rounds.map((r) => r.toFixed(1)).join(" ")}`,
        ).toBeLessThan(30);
      }
    } finally {
      target.close();
    }
  });

  it("customer bytes the exit never answers: reported once as mid_stream_stalled, the tunnel left open", async () => {
    const cred = await makeCredential(redis);
    const port = (silent.address() as { port: number }).port;
    const sock = await connectThrough(cred.username(`peer-${country}`), cred.secret, `127.0.0.1:${port}`);
    const t0 = Date.now();
    sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await waitUntil(
      async () => (await reportsFor(device)).includes("mid_stream_stalled"),
      5_000,
      "stall report",
    );
    console.log(`stall reported ${Date.now() - t0} ms after the unanswered request (threshold 600 ms)`);
    sock.write("more bytes\r\n");
    await new Promise((r) => setTimeout(r, 900));
    expect((await reportsFor(device)).filter((r) => r === "mid_stream_stalled")).toHaveLength(1);
    expect(sock.destroyed).toBe(false);
    sock.destroy();
    await waitUntil(async () => gw.ctx.tunnels.size === 0, 5_000, "tunnel closed");
  });

  it("the peer vanishing mid-download: the tunnel is cut and the drop is reported for the breaker", async () => {
    const cred = await makeCredential(redis);
    const sock = await connectThrough(
      cred.username(`peer-${country}`),
      cred.secret,
      `127.0.0.1:${targets.httpPort}`,
    );
    let received = 0;
    sock.on("data", (d: Buffer) => {
      received += d.length;
    });
    const ended = new Promise<void>((r) => sock.once("close", () => r()));
    sock.on("error", () => {});
    // A large body, read slowly enough that the peer is still mid-stream when it dies.
    sock.pause();
    sock.write(`GET /bytes/${64 * 1024 * 1024} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 300));
    faulty.ws.terminate();
    sock.resume();
    await ended;
    expect(received).toBeLessThan(64 * 1024 * 1024);
    const reasons = await waitUntil(
      async () => {
        const r = await reportsFor(device);
        return r.includes("mid_stream_peer_gone") ? r : undefined;
      },
      5_000,
      "peer-drop report",
    ).catch(async (err) => {
      console.log("reports", await reportsFor(device), "received", received, gw.ctx.metrics);
      throw err;
    });
    expect(reasons.filter((x) => x === "mid_stream_peer_gone")).toHaveLength(1);
  });
});
