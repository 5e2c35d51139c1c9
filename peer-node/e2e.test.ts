import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { loadRelayConfig } from "../relay-node/config.ts";
import { type RunningRelay, relayRedis, startRelay } from "../relay-node/relay.ts";
import { requestTunnel } from "../relay-node/testing/tunnel-client.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { fixedClock } from "../shared/clock.ts";
import { createPool, type Pool } from "../shared/db/pool.ts";
import { deriveDeviceId } from "../shared/jwt.ts";
import { keys } from "../shared/keys.ts";
import { silentLogger } from "../shared/log.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "../test/helpers/api.ts";
import { type ApiRecorder, startApiRecorder } from "../test/helpers/api-recorder.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { startPeer } from "./src/index.ts";

// The whole supply path as it runs for real: the API under wrangler dev, the relay process, and the
// SDK's CLI as a child process. Only the peer's reconnect base is shortened (PEER_RECONNECT_BASE_MS)
// so the file stays well under a minute. The tests run in order and share one device.

const e = stateEnv();
const node = process.execPath;
const root = join(import.meta.dirname, "..");
const cli = join(import.meta.dirname, "src", "cli.ts");
const tmp = mkdtempSync(join(e.PEERPROXY_TEST_TMP, "peer-e2e-"));
const secret = randomBytes(24).toString("hex");

let api: Api;
let pool: Pool;
let redis: TcpRedis;
let echo: Server;
let echoPort = 0;
let relayPort = 0;
let internalPort = 0;
let relay: Service | undefined;
let peer: Service | undefined;
let apiKey = "";
let accountId = "";
const name = `e2e-${randomBytes(4).toString("hex")}`;
let deviceId = "";

// A counting pass-through in front of the API: the test must know how many refreshes happened,
// and the expired-token test acts at the instant the refresh arrives.
let recorder: ApiRecorder;

const relayEnv = () => ({
  REDIS_URL: e.REDIS_URL,
  JWT_SECRET: e.JWT_SECRET,
  RELAY_SHARED_SECRET: secret,
  RELAY_PORT: String(relayPort),
  RELAY_INTERNAL_PORT: String(internalPort),
  RELAY_ID: `relay_e2e_${randomBytes(3).toString("hex")}`,
  DRAIN_TIMEOUT_MS: "300",
});

async function startRelayProcess(): Promise<Service> {
  const svc = startProcess("relay", node, [join(root, "relay-node", "main.ts")], {
    env: relayEnv(),
    cwd: root,
  });
  await svc.waitFor(/relay ready/, 15_000);
  return svc;
}

function startPeerCli(): Service {
  return startProcess(
    "peer",
    node,
    [
      cli,
      `-key=${apiKey}`,
      `-name=${name}`,
      "-connections=4",
      `-relay=ws://127.0.0.1:${relayPort}`,
      `-state=${join(tmp, "state.json")}`,
      `-api=${recorder.url}`,
      "-allow-private",
      "-verbose",
    ],
    { env: { PEER_RECONNECT_BASE_MS: "200" } },
  );
}

const count = (re: RegExp) => (peer?.output().match(new RegExp(re.source, "g")) ?? []).length;
const acks = () => count(/\[ACK\] relay confirmed connection/);
const refreshCalls = () => recorder.calls.filter((p) => p === `/v1/peer/agents/${deviceId}/refresh`).length;
const registerCalls = () => recorder.calls.filter((p) => p === "/v1/peer/agents/register").length;
const presenceSockets = async () => Number(await redis.raw.hget(keys.presence(deviceId), "sockets"));
const deviceRows = async () =>
  (await pool.query("SELECT id FROM devices WHERE account_id = $1", [accountId])).rowCount ?? 0;

beforeAll(async () => {
  [relayPort, internalPort] = [await freePort(), await freePort()];
  echo = createServer((s: Socket) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
  echoPort = (echo.address() as { port: number }).port;
  redis = tcpRedis(e.REDIS_URL);
  pool = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
  const [started, t] = await Promise.all([
    startApi(
      {
        ...stateVars(e),
        // Every local client shares one address: keep other files' calls from limiting ours.
        RATE_LIMIT_REGISTER_PER_MINUTE: "100000",
        RATE_LIMIT_REFRESH_PER_MINUTE: "100000",
        DEV_CLIENT_IP_CLASS: "residential",
      },
      { tmp: e.PEERPROXY_TEST_TMP },
    ),
    createAccountWithKey(pool, { name: `peer-e2e-${randomBytes(4).toString("hex")}`, kind: "supplier" }),
  ]);
  api = started;
  apiKey = t.apiKey;
  accountId = t.accountId;
  deviceId = await deriveDeviceId(apiKey, name);
  recorder = await startApiRecorder(() => api.url);
  relay = await startRelayProcess();
}, 90_000);

let inProcessRelay: RunningRelay | undefined;
let inProcessRedis: TcpRedis | undefined;

afterAll(async () => {
  await peer?.stop();
  await relay?.stop();
  await inProcessRelay?.close();
  await inProcessRedis?.close();
  await api?.stop();
  recorder?.close();
  echo?.close();
  await pool?.end();
  await redis?.close();
});

describe("peer CLI against the real API and relay", () => {
  it("registers, opens 4 sockets and gets [ACK] on each; presence shows 4 sockets", async () => {
    peer = startPeerCli();
    await peer.waitFor(
      new RegExp(`\\[REGISTERED\\] device=${deviceId} relay=ws://127\\.0\\.0\\.1:${relayPort} sockets=4`),
      20_000,
    );
    await waitUntil(async () => acks() === 4, 15_000, "4 acks");
    expect(count(new RegExp(`\\[CONNECTED\\]  device=${deviceId}`))).toBe(4);
    await waitUntil(async () => (await presenceSockets()) === 4, 15_000, "presence sockets=4");
    expect(registerCalls()).toBe(1);
    expect(await deviceRows()).toBe(1);
    expect(peer.output()).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}/); // no JWT in the logs
  });

  it("a restart resumes the same deviceId by refresh: no registration, no new device row", async () => {
    expect(await peer!.stop("SIGTERM")).toBe(0);
    const before = { register: registerCalls(), refresh: refreshCalls() };
    peer = startPeerCli();
    await peer.waitFor(new RegExp(`\\[REGISTERED\\] device=${deviceId} `), 20_000);
    await waitUntil(async () => acks() === 4, 15_000, "4 acks after restart");
    expect(registerCalls()).toBe(before.register);
    expect(refreshCalls()).toBe(before.refresh + 1);
    expect(await deviceRows()).toBe(1);
  });

  it("a tunnel through the relay's internal endpoint to a loopback echo server round-trips 10 MiB intact", async () => {
    const payload = randomBytes(10 * 1024 * 1024);
    const t0 = Date.now();
    const tunnel = await requestTunnel({
      internalUrl: `http://127.0.0.1:${internalPort}`,
      secret,
      deviceId,
      target: `127.0.0.1:${echoPort}`,
    });
    expect(tunnel.status).toBe(101);
    if (!("socket" in tunnel)) throw new Error(`tunnel refused: ${tunnel.text}`);
    const sock = tunnel.socket;
    const hash = createHash("sha256");
    let received = tunnel.early.length;
    hash.update(tunnel.early);
    const done = new Promise<void>((resolve, reject) => {
      sock.on("data", (d: Buffer) => {
        hash.update(d);
        received += d.length;
        if (received >= payload.length) resolve();
      });
      sock.on("error", reject);
      sock.on("close", () =>
        received >= payload.length ? resolve() : reject(new Error(`closed at ${received}`)),
      );
    });
    sock.resume();
    for (let off = 0; off < payload.length; off += 64 * 1024) {
      if (!sock.write(payload.subarray(off, off + 64 * 1024)))
        await new Promise((r) => sock.once("drain", r));
    }
    await done;
    const ms = Date.now() - t0;
    sock.destroy();
    expect(received).toBe(payload.length);
    expect(hash.digest("hex")).toBe(createHash("sha256").update(payload).digest("hex"));
    console.log(
      `[e2e] 10 MiB echo round trip through API-registered peer: ${ms} ms (${((20 * 1024) / ms).toFixed(1)} MiB/s both ways)`,
    );
    expect(peer!.output()).toMatch(
      new RegExp(`\\[TUNNEL_CONNECT\\] session=\\S+ target=127\\.0\\.0\\.1:${echoPort}`),
    );
    expect(peer!.output()).toMatch(/\[TCP_OPEN_OK\] session=\S+/);
  });

  it("an in-process peer without the development flag answers blocked_target for a loopback target", async () => {
    const lines: string[] = [];
    const strict = await startPeer({
      apiKey,
      name: `${name}-strict`,
      apiUrl: recorder.url,
      relayUrl: `ws://127.0.0.1:${relayPort}`,
      connections: 1,
      stateFile: join(tmp, "strict.json"),
      log: (l) => lines.push(l),
    });
    try {
      await waitUntil(async () => lines.some((l) => l.startsWith("[ACK]")), 10_000, "strict peer ack");
      const res = await requestTunnel({
        internalUrl: `http://127.0.0.1:${internalPort}`,
        secret,
        deviceId: strict.deviceId,
        target: `127.0.0.1:${echoPort}`,
      });
      expect(res.status).toBe(502);
      expect("body" in res && res.body).toMatchObject({
        code: "tunnel_open_failed",
        reason: "blocked_target",
      });
    } finally {
      await strict.stop();
    }
  });

  it("the relay killed with SIGKILL and restarted: all 4 sockets come back", async () => {
    const before = acks();
    await relay!.stop("SIGKILL");
    relay = await startRelayProcess();
    await waitUntil(async () => acks() === before + 4, 20_000, "4 sockets back");
    await waitUntil(async () => (await presenceSockets()) === 4, 15_000, "presence sockets=4");
    expect(peer!.child.exitCode).toBeNull();
  });

  it("an expired token is refused with 4002 and exactly one refresh serves all 4 sockets", async () => {
    // The relay's shared clock (tokens are checked by it) runs two hours ahead, so the peer's live
    // JWT (1 h) is expired to it. The clock returns to real time the moment the refresh reaches the
    // API, before the new token exists.
    let skewMs = 2 * 3600_000;
    recorder.onRefresh = () => {
      skewMs = 0;
    };
    await relay!.stop("SIGTERM");
    relay = undefined;
    const before = {
      acks: acks(),
      refresh: refreshCalls(),
      register: registerCalls(),
      refreshedLines: count(/\[REFRESHED\]/),
    };
    inProcessRedis = tcpRedis(e.REDIS_URL);
    inProcessRelay = await startRelay(loadRelayConfig(relayEnv()), {
      redis: relayRedis(inProcessRedis),
      sharedClock: fixedClock(() => Date.now() + skewMs),
      log: silentLogger(),
    });
    await waitUntil(async () => acks() === before.acks + 4, 20_000, "4 sockets back with the new token");
    expect(refreshCalls() - before.refresh).toBe(1);
    expect(count(/\[REFRESHED\]/) - before.refreshedLines).toBe(1);
    expect(count(/\[DISCONNECTED\] device=\S+ socket=\d code=4002/)).toBeGreaterThanOrEqual(1);
    expect(registerCalls()).toBe(before.register);
    recorder.onRefresh = undefined;
  });
});
