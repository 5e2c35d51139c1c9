// Ctrl-C as a terminal sends it: SIGINT to the launcher's whole process group, at ten moments from
// the first instant of start-up to after `ready`. Each time the launcher exits 0 within 10 s and
// nothing it started is left running (found by a marker every child inherits in its environment).
// All ten share one state directory, as a developer's .local/ is: each start follows one that was
// interrupted (mid-initdb, mid-migration, ...) and must still come up to its moment.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { freePort, startProcess } from "../dev/proc.ts";
import { stateEnv } from "./helpers/env.ts";

const root = join(import.meta.dirname, "..");

/** Pids of live processes whose environment carries `marker` (postgres included: we are its owner or root). */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, "latin1").includes(marker)) found.push(Number(entry));
    } catch {} // gone meanwhile, or not ours to read
  }
  return found;
}

async function stackPorts(): Promise<Record<string, string>> {
  const names = [
    "API_PORT",
    "RELAY_PORT",
    "RELAY_INTERNAL_PORT",
    "GATEWAY_HTTP_PORT",
    "GATEWAY_SOCKS_PORT",
    "GATEWAY_ADMIN_PORT",
    "PROBER_ADMIN_PORT",
  ];
  const env: Record<string, string> = {};
  for (const name of names) env[name] = String(await freePort());
  return env;
}

// The moments: fixed delays early (before the launcher has printed anything), then each step of
// start-up as the launcher reports it, then after ready.
const moments: { name: string; delayMs?: number; after?: RegExp }[] = [
  { name: "0.3 s in", delayMs: 300 },
  { name: "1 s in", delayMs: 1_000 },
  { name: "state services up", after: /\[stack\] redis /m },
  { name: "chain up", after: /\[stack\] chain /m },
  { name: "3 s after the chain", after: /\[stack\] chain /m, delayMs: 3_000 },
  { name: "api up", after: /\[stack\] api /m },
  { name: "gateway up", after: /\[stack\] gateway /m },
  { name: "peers up", after: /\[stack\] peers /m },
  { name: "exits listed", after: /\[stack\] exits verified/m },
  { name: "after ready", after: /^ready in/m },
];

/**
 * Starts the launcher, interrupts it at `moment`, and measures. Returns undefined when start-up
 * failed before the moment because a port picked by freePort() was taken meanwhile by another
 * test's process (files run in parallel): that attempt says nothing about Ctrl-C and is retried.
 */
async function interruptAt(moment: (typeof moments)[number], dir: string) {
  const marker = `PEERPROXY_SIGINT_RUN=${randomBytes(6).toString("hex")}`;
  const [markerName, markerValue] = marker.split("=") as [string, string];
  // startProcess puts the launcher in a process group of its own, as a shell does a job.
  // dev/stack.mjs: what `npm start` runs after bootstrap (it loads dev/stack.ts).
  const stack = startProcess("stack", process.execPath, ["dev/stack.mjs"], {
    cwd: root,
    env: { ...(await stackPorts()), STACK_DIR: dir, DATABASE_URL: undefined, [markerName]: markerValue },
  });
  try {
    try {
      if (moment.after) await stack.waitFor(moment.after, 150_000);
    } catch (err) {
      if (/EADDRINUSE|address already in use/i.test(stack.output())) return undefined;
      throw err;
    }
    if (moment.delayMs) await new Promise((r) => setTimeout(r, moment.delayMs));
    const t0 = Date.now();
    process.kill(-stack.child.pid!, "SIGINT");
    const code = await Promise.race([stack.exited, new Promise((r) => setTimeout(() => r("hung"), 10_000))]);
    const tookMs = Date.now() - t0;
    // SIGKILLed children vanish at once; allow the kernel a moment to reap them.
    let left = processesWith(marker);
    for (let i = 0; i < 10 && left.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = processesWith(marker);
    }
    return { code, tookMs, left, output: stack.output() };
  } finally {
    await stack.stop("SIGKILL");
    for (const pid of processesWith(marker))
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
  }
}

describe("Ctrl-C on npm start (dev/stack.ts)", () => {
  it("SIGINT to the process group at ten moments of start-up: exit 0 within 10 s, nothing left running", async () => {
    const dir = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "sigint-"));
    for (const moment of moments) {
      let r = await interruptAt(moment, dir);
      for (let attempt = 2; !r && attempt <= 3; attempt++) {
        console.log(`[sigint] ${moment.name}: a port was taken during start-up; again`);
        r = await interruptAt(moment, dir);
      }
      if (!r) throw new Error(`${moment.name}: ports taken three times in a row`);
      console.log(`[sigint] ${moment.name}: exit ${r.code} in ${r.tookMs} ms, ${r.left.length} left`);
      expect(r.code, `${moment.name}:\n${r.output.slice(-3000)}`).toBe(0);
      expect(r.tookMs).toBeLessThan(10_000);
      expect(r.left, `${moment.name}: still running`).toEqual([]);
      expect(r.output).not.toMatch(/\[stack\] failed/);
    }
  }, 900_000);
});
