// The seed documents' own examples, run as written against the local network (`npm start`), host,
// port and account aside: the Go fleet guide's register/refresh calls and its supplier self-test
// with `-pin-device-<deviceId>`, the network overview's DSL example with sid + rot, and its
// "verify it yourself" curls (pricing 200, the 402 query, stock counts, discovery documents).
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, type Service, startProcess } from "../dev/proc.ts";
import { stateEnv } from "./helpers/env.ts";

const run = promisify(execFile);
const root = join(import.meta.dirname, "..");

interface StackInfo {
  api: { url: string };
  peers: { name: string; deviceId: string }[];
  targets: { http: string; https: string; caFile: string };
  demo: { accountId: string; apiKey: string; credential: { username: string; password: string } };
  supplier?: { apiKey: string };
  gateway: { http: string };
}

let stack: Service;
let info: StackInfo;
let api: string;
let gateway: string; // host:port of the HTTP proxy
let account: string; // the `psx_<account>` part of the demo credential's username

/** A curl line as a shell runs it; returns status code, body and the whole verbose trace. */
async function curl(args: string[]): Promise<{ code: number; body: string; trace: string }> {
  const r = await run("curl", ["-sS", "-v", "--max-time", "20", ...args], { timeout: 30_000 }).catch(
    (err: { stdout?: string; stderr?: string; code?: number }) => ({
      stdout: err.stdout ?? "",
      stderr: `${err.stderr ?? ""}\n(curl exit ${err.code})`,
    }),
  );
  const codes = [...r.stderr.matchAll(/^< HTTP\/[\d.]+ (\d{3})/gm)].map((m) => Number(m[1]));
  return { code: codes.at(-1) ?? 0, body: r.stdout, trace: r.stderr };
}

beforeAll(async () => {
  const dir = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "seeds-"));
  chmodSync(dir, 0o755);
  const env: Record<string, string | undefined> = {
    STACK_DIR: dir,
    DATABASE_URL: undefined,
    STACK_VERBOSE: "1",
  };
  for (const name of [
    "API_PORT",
    "RELAY_PORT",
    "RELAY_INTERNAL_PORT",
    "GATEWAY_HTTP_PORT",
    "GATEWAY_SOCKS_PORT",
    "GATEWAY_ADMIN_PORT",
    "PROBER_ADMIN_PORT",
  ])
    env[name] = String(await freePort());
  // STACK_VERBOSE: the demo peers' -verbose logs ([TUNNEL_CONNECT], [TCP_OPEN_OK]) reach our output.
  // Files run in parallel: a port freePort() picked may be taken before the stack binds it; that
  // one failure is retried on new ports.
  for (let attempt = 1; ; attempt++) {
    stack = startProcess("stack", process.execPath, ["dev/stack.ts"], { cwd: root, env });
    try {
      await stack.waitFor(/^ready in/m, 180_000);
      break;
    } catch (err) {
      await stack.stop("SIGINT");
      if (attempt >= 3 || !/EADDRINUSE|address already in use/i.test(stack.output())) throw err;
      for (const name of Object.keys(env)) if (name.endsWith("_PORT")) env[name] = String(await freePort());
    }
  }
  info = JSON.parse(readFileSync(join(dir, "stack.json"), "utf8"));
  api = info.api.url;
  gateway = info.gateway.http.replace(/^http:\/\//, "");
  account = info.demo.credential.username.split("-")[0]!;
}, 400_000);

afterAll(async () => {
  if (!stack) return;
  process.kill(-stack.child.pid!, "SIGINT");
  await stack.exited;
});

describe("Go fleet guide (seed 000)", () => {
  // "HOW IT WORKS": POST /v1/peer/agents/register {name, type:"custom", apiKey, sdkVersion}.
  const name = `rig-${Math.random().toString(36).slice(2, 8)}`;
  const register = async (apiKey: string) =>
    fetch(`${api}/v1/peer/agents/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name, type: "custom", apiKey, sdkVersion: "go-1.3.2" }),
    });

  it("register answers deviceId, token|jwt, refreshToken, relay, earningsPerGB; same key + name = same device", async () => {
    const apiKey = info.supplier?.apiKey ?? info.demo.apiKey;
    const res = await register(apiKey);
    const body = (await res.json()) as Record<string, unknown>;
    expect(res.status, JSON.stringify(body)).toBe(200);
    const expectedId = `agent_${createHash("sha256").update(`${apiKey}:${name}`).digest("hex").slice(0, 16)}`;
    expect(body).toMatchObject({ deviceId: expectedId, relay: expect.stringMatching(/^wss?:\/\//) });
    expect(body.token).toBe(body.jwt);
    expect(typeof body.refreshToken).toBe("string");
    expect(Object.keys(body.earningsPerGB as object).length).toBeGreaterThan(0);
    const again = (await (await register(apiKey)).json()) as { deviceId: string; refreshToken: string };
    expect(again.deviceId).toBe(expectedId);

    // Refresh, both paths the SDKs use.
    const token = await fetch(`${api}/v1/peer/token/${expectedId}/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: again.refreshToken }),
    });
    expect(token.status).toBe(200);
    expect(await token.json()).toMatchObject({ token: expect.any(String), jwt: expect.any(String) });
    const rotated = await fetch(`${api}/v1/peer/agents/${expectedId}/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken: again.refreshToken }),
    });
    expect(rotated.status).toBe(200);
    expect(await rotated.json()).toMatchObject({ refreshToken: expect.any(String), jwt: expect.any(String) });
  });

  it("the self-test curl -x psx_<account>-peer-us-pin-device-<deviceId>:<password>@gateway reaches the target through that device", async () => {
    const device = info.peers[1]!;
    const from = stack.output().length;
    // As printed in the guide (`curl -v -x "http://psx_...-pin-device-DEVICEID:PROXY_PASSWORD@gw:7000" URL`).
    const r = await curl([
      "-x",
      `http://${account}-peer-us-pin-device-${device.deviceId}:${info.demo.credential.password}@${gateway}`,
      `${info.targets.http}/`, // the guide fetches https://api.ipify.org/?format=json; loopback only here
    ]);
    expect(r.code, r.trace).toBe(200);
    expect(r.body).toContain("hello from the peerproxy local target");
    // "In your node's -verbose log you should see: [TUNNEL_CONNECT] ... then [TCP_OPEN_OK] ..."
    await stack.waitFor(new RegExp(`\\[${device.name}\\] \\[TCP_OPEN_OK\\]`), 10_000);
    const log = stack.output().slice(from);
    expect(log).toMatch(new RegExp(`\\[${device.name}\\] \\[TUNNEL_CONNECT\\]`));
    const other = info.peers[0]!.name;
    expect(log, "the other demo peer served a pinned request").not.toMatch(
      new RegExp(
        `\\[${other}\\] \\[TUNNEL_CONNECT\\] session=\\S+ target=127\\.0\\.0\\.1:${new URL(info.targets.http).port}`,
      ),
    );
  });

  it("pinning a device that is not online is a clear error naming it, never another device", async () => {
    const absent = "agent_0123456789abcdef";
    const r = await curl([
      "-x",
      `http://${account}-peer-us-pin-device-${absent}:${info.demo.credential.password}@${gateway}`,
      `${info.targets.http}/`,
    ]);
    expect(r.code).toBe(502);
    expect(r.body).toMatch(new RegExp(`E_NO_STOCK: device ${absent} `));
  });
});

describe("How the network works (seed 003)", () => {
  it("the DSL example psx_<account>-mbl-us-sid-myjob123-rot-sticky routes (and the same over the peer pool)", async () => {
    for (const pool of ["mbl", "peer"]) {
      const r = await curl([
        "-x",
        `http://${account}-${pool}-us-sid-myjob123-rot-sticky:${info.demo.credential.password}@${gateway}`,
        `${info.targets.http}/`,
      ]);
      expect(r.code, `${pool}: ${r.trace}`).toBe(200);
      expect(r.body).toContain("hello from the peerproxy local target");
    }
  });

  it("verify it yourself 1: the catalog (200, tiers, networks, DSL)", async () => {
    const r = await curl([`${api}/v1/x402/pool/pricing`]);
    expect(r.code).toBe(200);
    const body = JSON.parse(r.body);
    expect(JSON.stringify(body)).toMatch(/mbl/);
    expect(JSON.stringify(body)).toMatch(/psx_/);
  });

  it("verify it yourself 2: the 402 is the price sheet", async () => {
    const r = await curl([`${api}/v1/x402/pool?tier=mbl&country=us&traffic=0.1`]);
    expect(r.code, r.body).toBe(402);
    const body = JSON.parse(r.body) as {
      x402Version: number;
      accepts: { maxAmountRequired: string; payTo: string }[];
    };
    expect(body.x402Version).toBe(1);
    expect(body.accepts.length).toBeGreaterThan(0);
    expect(body.accepts[0]!.maxAmountRequired).toMatch(/^\d+$/);
  });

  it("verify it yourself 3: live inventory, counts only, per country (no IPs)", async () => {
    const r = await curl([`${api}/v1/gateway/pool/stock`]);
    expect(r.code).toBe(200);
    expect(r.body).toMatch(/"us"/);
    expect(r.body).not.toMatch(/\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b/);
  });

  it("verify it yourself 4: the machine-readable documents", async () => {
    for (const path of ["/skill.md", "/llms.txt", "/.well-known/x402.json"]) {
      const r = await curl([`${api}${path}`]);
      expect(r.code, path).toBe(200);
      expect(r.body.length, path).toBeGreaterThan(50);
    }
  });

  it("registration as the SDKs do it: POST /v1/peer/register with X-API-Key", async () => {
    const res = await fetch(`${api}/v1/peer/register`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": info.supplier?.apiKey ?? info.demo.apiKey },
      body: JSON.stringify({ deviceName: `android-${Math.random().toString(36).slice(2, 8)}` }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ device: { deviceId: expect.stringMatching(/^agent_/) } });
  });

  it("a NUL byte as a JSON body is a 400 naming the problem, not a 500", async () => {
    const res = await fetch(`${api}/v1/peer/token/${info.peers[0]!.deviceId}/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "\u0000",
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      error: { code: "E_BAD_REQUEST", message: expect.stringMatching(/JSON/) },
    });
  });
});
