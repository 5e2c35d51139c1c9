import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProcess } from "../dev/proc.ts";
import { parseCli } from "./src/config.ts";
import { type StandinApi, startStandinApi } from "./testing/standins.ts";

const cli = join(import.meta.dirname, "src", "cli.ts");
const node = process.execPath;

/** Runs the real CLI to completion (only for runs that exit by themselves). */
function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(node, [cli, ...args], {
      env: { PATH: process.env["PATH"], HOME: tmp, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("exit", (code) => resolve({ code, out }));
  });
}

let tmp: string;
let api: StandinApi;
beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), "peer-config-"));
  // Registration answers with a relay port nobody listens on: the CLI registers, then keeps retrying.
  api = await startStandinApi("ws://127.0.0.1:9");
});
afterAll(async () => {
  await api.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe("flag and env parsing", () => {
  it("applies the guide's defaults: country US, 4 connections, state file in the home directory, random name", () => {
    const r = parseCli(["-key=psx_abc"], {});
    expect(r.ok).toBe(true);
    if (r.ok !== true) return;
    expect(r.config).toMatchObject({
      apiKey: "psx_abc",
      country: "US",
      connections: 4,
      verbose: false,
      allowPrivateTargets: false,
      nameWasRandom: true,
    });
    expect(r.config.relayUrl).toBeUndefined();
    expect(r.config.wallet).toBeUndefined();
    expect(r.config.stateFile.endsWith(".peerproxy-peer-state.json")).toBe(true);
    expect(r.config.name).toMatch(/^peer-[0-9a-f]{8}$/);
  });

  it("reads every env var, and a flag beats its env var", () => {
    const env = {
      API_KEY: "psx_env",
      AGENT_NAME: "rig-env",
      COUNTRY: "de",
      WS_CONNECTIONS: "2",
      WALLET: "0xabc",
      PEER_STATE_FILE: "/tmp/x.json",
      RELAY_URL: "wss://relay.example.dev",
      VERBOSE: "true",
      PEER_API_URL: "http://127.0.0.1:1/",
      PEER_ALLOW_PRIVATE_TARGETS: "true",
      RELAY_ALLOWLIST: "example.dev, other.dev",
    };
    const fromEnv = parseCli([], env);
    expect(fromEnv.ok).toBe(true);
    if (fromEnv.ok !== true) return;
    expect(fromEnv.config).toMatchObject({
      apiKey: "psx_env",
      name: "rig-env",
      nameWasRandom: false,
      country: "DE",
      connections: 2,
      wallet: "0xabc",
      stateFile: "/tmp/x.json",
      relayUrl: "wss://relay.example.dev",
      verbose: true,
      apiUrl: "http://127.0.0.1:1",
      allowPrivateTargets: true,
      relayAllowlist: ["example.dev", "other.dev"],
    });
    const flags = parseCli(
      ["--name", "rig-flag", "-connections=8", "--country", "fr", "-verbose=false"],
      env,
    );
    expect(flags.ok).toBe(true);
    if (flags.ok !== true) return;
    expect(flags.config).toMatchObject({
      name: "rig-flag",
      connections: 8,
      country: "FR",
      verbose: false,
      apiKey: "psx_env",
    });
  });

  it("a bare boolean flag means true and does not swallow the next argument", () => {
    const r = parseCli(["-verbose", "-key", "psx_k"], {});
    expect(r.ok === true && r.config.verbose && r.config.apiKey === "psx_k").toBe(true);
  });
});

describe("the real CLI", () => {
  it("exits 2 naming the flag when the API key is missing", async () => {
    const { code, out } = await runCli(["-name=rig-001"]);
    expect(code).toBe(2);
    expect(out).toMatch(/missing API key: set -key=psx_\.\.\. or API_KEY/);
  });

  it.each([
    [
      ["-key=psx_a", "-connections=9"],
      {},
      /invalid value "9" for -connections \(WS_CONNECTIONS\): accepted: an integer 1-8/,
    ],
    [["-key=psx_a"], { WS_CONNECTIONS: "0" }, /invalid value "0" for WS_CONNECTIONS \(-connections\)/],
    [["-key=psx_a", "--connections", "two"], {}, /-connections .*an integer 1-8/],
    [["-key=psx_a", "-country=USA"], {}, /-country .*ISO-2/],
    [["-key=nope"], {}, /invalid value \(hidden\) for -key .*psx_/],
    [["-key=psx_a", "-relay=http://x"], {}, /-relay .*ws:\/\/ or wss:\/\//],
    [["-key=psx_a", "-verbose=perhaps"], {}, /-verbose .*true or false/],
    [["-key=psx_a", "-bogus=1"], {}, /unknown flag -bogus; accepted: -key -name/],
    [["-key=psx_a", "-name"], {}, /flag -name needs a value/],
  ] as const)("exits 2 with one clear line for %j %j", async (args, env, message) => {
    const { code, out } = await runCli([...args], env);
    expect(code).toBe(2);
    expect(out).toMatch(message);
    expect(out.trim().split("\n")).toHaveLength(1);
  });

  it("without a name it warns loudly, registers with the defaults and saves the state file 0600 in HOME", async () => {
    const home = mkdtempSync(join(tmp, "home-"));
    const before = api.calls.length;
    const peer = startProcess("peer", node, [cli, "-key=psx_defaults"], {
      env: { HOME: home, PEER_API_URL: api.url },
    });
    try {
      await peer.waitFor(
        /\[REGISTERED\] device=agent_[0-9a-f]{16} relay=ws:\/\/127\.0\.0\.1:9 sockets=4/,
        15_000,
      );
      expect(peer.output()).toMatch(/\[WARN\] no -name\/AGENT_NAME set.*fleets MUST/);
      const reg = api.calls.slice(before).find((c) => c.path === "/v1/peer/agents/register")!;
      expect(reg.body).toMatchObject({ apiKey: "psx_defaults", type: "custom", country: "US" });
      expect(reg.body["name"]).toMatch(/^peer-[0-9a-f]{8}$/);
      expect(reg.body).not.toHaveProperty("walletAddress");
      const statePath = join(home, ".peerproxy-peer-state.json");
      expect(statStateMode(statePath)).toBe(0o600);
      expect(JSON.parse(readFileSync(statePath, "utf8"))).toMatchObject({ relay: "ws://127.0.0.1:9" });
      expect(peer.output()).not.toMatch(/jwt-[0-9a-f]{12}/);
    } finally {
      expect(await peer.stop("SIGTERM")).toBe(0);
    }
  });

  it("exits 1 naming the problem when the state file cannot be written", async () => {
    const file = join(tmp, "not-a-dir");
    writeFileSync(file, "x");
    const { code, out } = await runCli(
      ["-key=psx_state", "-name=rig-1", `-state=${join(file, "state.json")}`],
      {
        PEER_API_URL: api.url,
      },
    );
    expect(code).toBe(1);
    expect(out).toMatch(/cannot start: cannot write state file .*not-a-dir\/state\.json: E(EXIST|NOTDIR)/);
  });

  it("exits 1 when the API refuses the key", async () => {
    api.registerStatus = 401;
    try {
      const { code, out } = await runCli(["-key=psx_refused", "-name=rig-1"], { PEER_API_URL: api.url });
      expect(code).toBe(1);
      expect(out).toMatch(/registration refused \(HTTP 401\)/);
    } finally {
      api.registerStatus = undefined;
    }
  });
});

function statStateMode(path: string): number {
  return statSync(path).mode & 0o777;
}
