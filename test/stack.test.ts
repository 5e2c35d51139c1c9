import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { freePort, startProcess } from "../dev/proc.ts";
import { stateEnv } from "./helpers/env.ts";

const root = join(import.meta.dirname, "..");

function processesMentioning(text: string): string[] {
  const out = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" });
  return out.split("\n").filter((l) => l.includes(text) && !l.includes("ps -eo"));
}

describe("npm start (dev/stack.ts)", () => {
  it("comes up, writes stack.json with a healthy API, and SIGINT leaves no child process behind", async () => {
    const dir = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "stack-"));
    chmodSync(dir, 0o755); // embedded Postgres runs as the postgres user when we are root
    const ports = {
      API_PORT: await freePort(),
      RELAY_PORT: await freePort(),
      RELAY_INTERNAL_PORT: await freePort(),
      GATEWAY_HTTP_PORT: await freePort(),
      GATEWAY_SOCKS_PORT: await freePort(),
      GATEWAY_ADMIN_PORT: await freePort(),
    };
    const env: Record<string, string> = { STACK_DIR: dir };
    for (const [k, v] of Object.entries(ports)) env[k] = String(v);
    const stack = startProcess("stack", process.execPath, ["dev/stack.ts"], { cwd: root, env: { ...env, DATABASE_URL: undefined } });
    try {
      await stack.waitFor(/^ready in/m, 120_000);
      const info = JSON.parse(readFileSync(join(dir, "stack.json"), "utf8"));
      expect(info.api.url).toBe(`http://127.0.0.1:${ports.API_PORT}`);
      expect(info.demo.apiKey).toMatch(/^psx_/);
      const health = await fetch(info.api.health);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ checks: { redis: { ok: true }, postgres: { ok: true } } });
      expect(processesMentioning(dir).length).toBeGreaterThan(0);
    } finally {
      // Ctrl-C delivers SIGINT to the launcher; it must stop everything it started.
      stack.child.kill("SIGINT");
      await stack.exited;
    }
    expect(stack.output()).toContain("stopped");
    expect(processesMentioning(dir)).toEqual([]);
    expect(existsSync(join(dir, "stack.json"))).toBe(true);
  });
});
