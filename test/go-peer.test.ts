import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { loadRelayConfig } from "../relay-node/config.ts";
import { type RunningRelay, relayRedis, startRelay } from "../relay-node/relay.ts";
import { fixedClock } from "../shared/clock.ts";
import { deriveDeviceId } from "../shared/jwt.ts";
import { keys } from "../shared/keys.ts";
import { silentLogger } from "../shared/log.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { type ApiRecorder, startApiRecorder } from "./helpers/api-recorder.ts";
import { stateEnv } from "./helpers/env.ts";
import { goBinary } from "./helpers/go.ts";
import { type SupplyNetwork, startSupplyNetwork } from "./helpers/supply-network.ts";

// The Go peer (peer-go/) built from source and run as a fleet would run it, against the real local
// network: the API under wrangler dev, the relay, the gateway and the prober as their own
// processes, the cron driven by hand. The tests run in order and share one device.
// The customer request names the device with the fleet guide's self-test token,
// `pin-device-<deviceId>` (PROTOCOL.md section 3).

const e = stateEnv();
const tmp = mkdtempSync(join(e.PEERPROXY_TEST_TMP, "go-peer-"));
const run = promisify(execFile);
const name = `go-e2e-${randomBytes(4).toString("hex")}`;

let net: SupplyNetwork;
let peer: Service | undefined;
let bin = "";
let deviceId = "";

// A counting pass-through in front of the API: the tests count registrations and refreshes, and
// the expired-token test acts at the instant the refresh arrives.
let recorder: ApiRecorder;
let inProcessRelay: RunningRelay | undefined;
let inProcessRedis: TcpRedis | undefined;
const refreshCalls = () => recorder.calls.filter((p) => p === `/v1/peer/agents/${deviceId}/refresh`).length;
const registerCalls = () => recorder.calls.filter((p) => p === "/v1/peer/agents/register").length;

function startGoPeer(): Service {
  return startProcess("go-peer", bin, ["-connections=4", "-allow-private", "-verbose"], {
    env: {
      API_KEY: net.supplier.apiKey,
      AGENT_NAME: name,
      API_BASE: recorder.url,
      RELAY_URL: net.relayUrl,
      PEER_STATE_FILE: join(tmp, "state.json"),
      PEER_RECONNECT_BASE_MS: "200",
    },
  });
}

const count = (re: RegExp) => (peer?.output().match(new RegExp(re.source, "g")) ?? []).length;
const acks = () => count(/\[ACK\] relay confirmed connection/);
const presenceSockets = async () => Number(await net.redis.raw.hget(keys.presence(deviceId), "sockets"));
const deviceRows = async () =>
  (await net.pool.query("SELECT id FROM devices WHERE account_id = $1", [net.supplier.accountId])).rowCount ??
  0;

beforeAll(async () => {
  const [built, started] = await Promise.all([goBinary(tmp), startSupplyNetwork(e, { country: "is" })]);
  bin = built;
  net = started;
  deviceId = await deriveDeviceId(net.supplier.apiKey, name);
  recorder = await startApiRecorder(() => net.api.url);
}, 240_000);

afterAll(async () => {
  await peer?.stop();
  await inProcessRelay?.close();
  await inProcessRedis?.close();
  await net?.stop();
  recorder?.close();
});

describe("Go peer binary against the local network", () => {
  it("registers with its derived deviceId, opens 4 sockets and gets [ACK] on each", async () => {
    peer = startGoPeer();
    await peer.waitFor(
      new RegExp(
        `\\[REGISTERED\\] device=${deviceId} relay=${net.relayUrl.replaceAll(".", "\\.")} sockets=4`,
      ),
      30_000,
    );
    await waitUntil(async () => acks() === 4, 20_000, "4 acks");
    expect(count(new RegExp(`\\[CONNECTED\\]  device=${deviceId} socket=\\d`))).toBe(4);
    await waitUntil(async () => (await presenceSockets()) === 4, 15_000, "presence sockets=4");
    expect(await deviceRows()).toBe(1);
    expect(registerCalls()).toBe(1);
    expect(peer.output()).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}/); // no JWT in the logs
    const state = JSON.parse(readFileSync(join(tmp, "state.json"), "utf8"));
    expect(state).toMatchObject({ deviceId, relay: expect.stringMatching(/^ws/) });
    expect(state.refreshToken).toEqual(expect.any(String));
  });

  it("is probed and verified by the prober and listed by the cron", async () => {
    await net.waitListed(deviceId);
  });

  it("a customer request pinned with -pin-device-<deviceId> returns 200 and a 10 MiB body with the right SHA-256", async () => {
    const size = 10 * 1024 * 1024;
    const url = `${net.target.url}/bytes/${size}`;
    const direct = createHash("sha256")
      .update(Buffer.from(await (await fetch(url)).arrayBuffer()))
      .digest("hex");
    const t0 = Date.now();
    const got = await net.proxiedGet(url, { pinDevice: deviceId });
    const ms = Date.now() - t0;
    expect(got.status, got.text).toBe(200);
    expect(got.bytes).toBe(size);
    expect(got.sha256).toBe(direct);
    console.log(
      `[go-peer] 10 MiB via gateway -> relay -> Go peer: ${ms} ms (${((10 * 1000) / ms).toFixed(1)} MiB/s)`,
    );
    expect(peer!.output()).toMatch(/\[TUNNEL_CONNECT\] session=\S+ target=127\.0\.0\.1:\d+/);
    expect(peer!.output()).toMatch(/\[TCP_OPEN_OK\] session=\S+/);
  });

  it("SIGTERM closes its sockets and exits 0; a restart resumes the same device without a new row", async () => {
    expect(await peer!.stop("SIGTERM")).toBe(0);
    expect(peer!.output()).toMatch(/\[STOPPED\] device=/);
    peer = startGoPeer();
    await peer.waitFor(new RegExp(`\\[REGISTERED\\] device=${deviceId} `), 30_000);
    await waitUntil(async () => acks() === 4, 20_000, "4 acks after restart");
    // Resumed from the state file by refresh, not by a second registration.
    expect(peer.output()).toMatch(/\[IDENTITY\] ipType=\S* resumed=true/);
    expect(registerCalls()).toBe(1);
    expect(refreshCalls()).toBe(1);
    expect(await deviceRows()).toBe(1);
    const state = JSON.parse(readFileSync(join(tmp, "state.json"), "utf8"));
    expect(state.deviceId).toBe(deviceId);
  });

  it("the relay killed with SIGKILL and restarted: all 4 sockets come back", async () => {
    const before = acks();
    await net.restartRelay("SIGKILL");
    await waitUntil(async () => acks() === before + 4, 30_000, "4 sockets back");
    await waitUntil(async () => (await presenceSockets()) === 4, 15_000, "presence sockets=4");
    expect(peer!.child.exitCode).toBeNull();
    expect(count(/\[DISCONNECTED\] device=\S+ socket=\d code=1006/)).toBeGreaterThanOrEqual(4);
  });

  it("an expired token is refused with 4002 and exactly one refresh serves all 4 sockets", async () => {
    // The relay's shared clock (tokens are checked by it) runs two hours ahead, so the peer's live
    // JWT (1 h) is expired to it. The clock returns to real time the moment the refresh reaches the
    // API, before the new token exists.
    let skewMs = 2 * 3600_000;
    recorder.onRefresh = () => {
      skewMs = 0;
    };
    await net.stopRelay("SIGTERM");
    const before = {
      acks: acks(),
      refresh: refreshCalls(),
      register: registerCalls(),
      refreshed: count(/\[REFRESHED\]/),
    };
    inProcessRedis = tcpRedis(net.relayEnv.REDIS_URL!);
    inProcessRelay = await startRelay(loadRelayConfig(net.relayEnv), {
      redis: relayRedis(inProcessRedis),
      sharedClock: fixedClock(() => Date.now() + skewMs),
      log: silentLogger(),
    });
    await waitUntil(async () => acks() === before.acks + 4, 30_000, "4 sockets back with the new token");
    expect(refreshCalls() - before.refresh).toBe(1);
    expect(count(/\[REFRESHED\]/) - before.refreshed).toBe(1);
    expect(count(/\[DISCONNECTED\] device=\S+ socket=\d code=4002/)).toBeGreaterThanOrEqual(1);
    expect(registerCalls()).toBe(before.register);
    recorder.onRefresh = undefined;
  });

  it("bad flags exit 2 naming the flag", async () => {
    const err = await run(bin, ["-key=psx_x", "-connections=9"]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(
      /invalid value "9" for -connections \(WS_CONNECTIONS\)/,
    );
    const unknown = await run(bin, ["-nope"]).catch((e: { code: number; stderr: string }) => e);
    expect((unknown as { code: number }).code).toBe(2);
    expect((unknown as { stderr: string }).stderr).toMatch(/-nope/);
  });

  it("cross-compiles statically (CGO_ENABLED=0) for linux/amd64 and linux/arm64", async () => {
    for (const [arch, machine] of [
      ["amd64", 0x3e],
      ["arm64", 0xb7],
    ] as const) {
      const out = await goBinary(tmp, { GOOS: "linux", GOARCH: arch });
      const elf = readFileSync(out);
      expect(elf.subarray(0, 4).toString("latin1")).toBe("\x7fELF");
      expect(elf.readUInt16LE(18)).toBe(machine);
      // A dynamically linked binary names its loader (PT_INTERP); a static one has none.
      expect(elf.includes(Buffer.from("/lib/ld-linux"))).toBe(false);
      expect(elf.includes(Buffer.from("/lib64/ld-linux"))).toBe(false);
    }
  }, 240_000);

  it("deploy files: the systemd template makes %i the device name and state file; the Dockerfile builds statically with a state volume", () => {
    const deploy = join(import.meta.dirname, "..", "peer-go", "deploy");
    const unit = readFileSync(join(deploy, "peerproxy-peer@.service"), "utf8");
    expect(unit).toMatch(/^Environment=AGENT_NAME=%i$/m);
    expect(unit).toMatch(/^Environment=PEER_STATE_FILE=\/var\/lib\/peerproxy-peer\/%i\.json$/m);
    expect(unit).toMatch(/^StateDirectory=peerproxy-peer$/m);
    expect(unit).toMatch(/^Restart=always$/m);
    expect(unit).toMatch(/^RestartPreventExitStatus=2$/m);
    expect(unit).not.toMatch(/psx_[A-Za-z0-9]{8,}/); // the key lives in the EnvironmentFile
    const docker = readFileSync(join(deploy, "Dockerfile"), "utf8");
    expect(docker).toMatch(/^FROM golang:1\.26\S* AS build$/m);
    expect(docker).toMatch(/CGO_ENABLED=0 go build .* \.\/cmd\/peerproxy-peer$/m);
    expect(docker).toMatch(/^VOLUME \/data$/m);
    expect(docker).toMatch(/^ENV PEER_STATE_FILE=\/data\/state\.json$/m);
    for (const m of docker.matchAll(/^COPY (?!--from)(.+) \S+$/gm))
      for (const src of m[1]!.split(/\s+/))
        if (src !== ".") expect(existsSync(join(deploy, "..", src)), src).toBe(true);
  });
});
