import { execFile, execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { freePort, startProcess, waitUntil } from "../dev/proc.ts";
import { keys } from "../shared/keys.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "./helpers/env.ts";

const run = promisify(execFile);

const root = join(import.meta.dirname, "..");

function processesMentioning(text: string): string[] {
  const out = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" });
  return out.split("\n").filter((l) => l.includes(text) && !l.includes("ps -eo"));
}

/** Runs one of stack.json's copy-paste curl lines (as a user would paste it into a shell). */
async function curlLine(line: string, extra = ""): Promise<string> {
  const { stdout } = await run("bash", ["-c", `${line} -sS ${extra}`], { timeout: 30_000 });
  return stdout;
}

describe("npm start (dev/stack.ts)", () => {
  it("comes up with every service, its curl lines and the agent demo work, and SIGINT leaves no child process behind", async () => {
    const dir = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "stack-"));
    chmodSync(dir, 0o755); // embedded Postgres runs as the postgres user when we are root
    const ports = {
      API_PORT: await freePort(),
      RELAY_PORT: await freePort(),
      RELAY_INTERNAL_PORT: await freePort(),
      GATEWAY_HTTP_PORT: await freePort(),
      GATEWAY_SOCKS_PORT: await freePort(),
      GATEWAY_ADMIN_PORT: await freePort(),
      PROBER_ADMIN_PORT: await freePort(),
    };
    // The watchdog's first run comes one interval after start: short here, a minute by default.
    // STACK_VERBOSE: every process's log lines reach this test's buffer (the logging checks below).
    const env: Record<string, string> = { STACK_DIR: dir, WATCHDOG_INTERVAL_MS: "2000", STACK_VERBOSE: "1" };
    for (const [k, v] of Object.entries(ports)) env[k] = String(v);
    const stack = startProcess("stack", process.execPath, ["dev/stack.ts"], {
      cwd: root,
      env: { ...env, DATABASE_URL: undefined },
    });
    try {
      await stack.waitFor(/^ready in/m, 150_000);
      const info = JSON.parse(readFileSync(join(dir, "stack.json"), "utf8"));
      expect(info.api.url).toBe(`http://127.0.0.1:${ports.API_PORT}`);
      expect(info.demo.apiKey).toMatch(/^psx_/);
      // The demo peers belong to a supplier account of their own, so demo traffic earns (ADR 0010).
      expect(info.supplier.apiKey).toMatch(/^psx_/);
      expect(info.supplier.accountId).not.toBe(info.demo.accountId);
      const health = await fetch(info.api.health);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ checks: { redis: { ok: true }, postgres: { ok: true } } });
      expect(processesMentioning(dir).length).toBeGreaterThan(0);

      // The pages (ADR 0020) are in the ready line and stack.json; the supplier's key opens /farmer,
      // where the demo peers show as listed.
      const ready = /^ready in .*$/m.exec(stack.output())?.[0] ?? "";
      for (const page of ["status", "quickstart", "farmer", "admin"])
        expect(ready).toContain(info.pages[page]);
      const signIn = await fetch(info.pages.signIn, {
        method: "POST",
        redirect: "manual",
        headers: { "content-type": "application/x-www-form-urlencoded", origin: info.api.url },
        body: new URLSearchParams({ apiKey: info.supplier.apiKey }).toString(),
      });
      expect(signIn.headers.get("location")).toBe("/farmer");
      const cookie = /^([^;]+);/.exec(signIn.headers.get("set-cookie") ?? "")?.[1] ?? "";
      const farmer = await (await fetch(info.pages.farmer, { headers: { cookie } })).text();
      for (const p of info.peers as { deviceId: string }[])
        expect(farmer).toMatch(
          new RegExp(`data-device="${p.deviceId}">[\\s\\S]*?data-testid="device-state">listed<`),
        );

      // The demo exits were verified by the prober and listed by the cron before `ready`.
      const redis = tcpRedis(info.redis.url);
      try {
        for (const id of [...info.peers.map((p: { deviceId: string }) => p.deviceId), info.modem.id])
          expect(await redis.raw.sismember(keys.poolListed(), id), id).toBe(1);

        // The copy-paste lines: HTTP forward and SOCKS5 via a demo peer, CONNECT+TLS via the modem.
        expect(await curlLine(info.demo.curl)).toContain("hello from the peerproxy local target");
        expect(await curlLine(info.demo.curlSocks)).toContain("hello from the peerproxy local target");
        expect((await curlLine(info.demo.curlHttps)).trim()).toBe("200 1024");

        // Observability (ADR 0021): latency histograms and event-loop lag on the relay's and the
        // gateway's /metrics, and a customer's request id in one of the gateway's JSON log lines.
        for (const url of [info.relay.metrics, info.gateway.metrics]) {
          const text = await (await fetch(url)).text();
          expect(text, url).toMatch(/^# TYPE (relay|gateway)_tunnel_setup_seconds histogram$/m);
          expect(text, url).toMatch(/^nodejs_eventloop_lag_p99_seconds [\d.e-]+$/m);
        }
        expect(await (await fetch(info.gateway.metrics)).text()).toMatch(
          /^gateway_select_endpoint_seconds_count\{pool="peer"\} [1-9]/m,
        );
        const requestId = `req_stack_${Date.now()}`;
        expect(await curlLine(info.demo.curl, `-H 'X-Request-ID: ${requestId}'`)).toContain("hello from");
        const logged = await waitUntil(
          async () =>
            stack
              .output()
              .split("\n")
              .find((l) => l.includes(`"requestId":"${requestId}"`)),
          10_000,
          "the request's gateway log line",
        );
        expect(logged).toMatch(/^\[gateway[^\]]*\] \{.*"service":"gateway".*"msg":"tunnel closed"/);

        // 4 MiB through a demo peer: the relay's per-device counters grow by at least that, and the
        // credential's used bytes grow by what was transferred within 1% (headers and framing).
        const peerBytes = async () => {
          let total = 0;
          for (const p of info.peers) {
            const h = await redis.hgetall(keys.deviceBytes(p.deviceId));
            total += Number(h.up ?? 0) + Number(h.down ?? 0);
          }
          return total;
        };
        const used = async () => {
          const res = await fetch(`${info.api.url}/v1/reseller/pool-keys/${info.demo.credential.id}`, {
            headers: { "x-api-key": info.demo.apiKey },
          });
          return Number(((await res.json()) as { usedBytes: number }).usedBytes);
        };
        const size = 4 * 1024 * 1024;
        const [bytesBefore, usedBefore] = [await peerBytes(), await used()];
        const line = info.demo.curl.replace(/\/$/, `/bytes/${size}`);
        expect((await curlLine(line, "-o /dev/null -w '%{size_download}'")).trim()).toBe(String(size));
        // Both counters are flushed at most 5 s apart.
        const deadline = Date.now() + 12_000;
        while (
          Date.now() < deadline &&
          ((await used()) - usedBefore < size || (await peerBytes()) - bytesBefore < size)
        )
          await new Promise((r) => setTimeout(r, 250));
        const grew = (await used()) - usedBefore;
        console.log(
          `[stack] 4 MiB via a demo peer: credential +${grew} B, relay device counters +${(await peerBytes()) - bytesBefore} B`,
        );
        expect(grew).toBeGreaterThanOrEqual(size);
        expect(grew).toBeLessThanOrEqual(size * 1.01);
        expect((await peerBytes()) - bytesBefore).toBeGreaterThanOrEqual(size);

        // The cron accrues the demo peers' traffic as their supplier's earnings (the demo customer's
        // key has no `supply` scope, and its own devices would earn nothing: ADR 0010).
        const earned = async () => {
          const res = await fetch(`${info.api.url}/v1/peer/earnings`, {
            headers: { "x-api-key": info.supplier.apiKey },
          });
          return (await res.json()) as {
            bytes: string;
            accruedMicro: string;
            devices: { deviceId: string }[];
          };
        };
        const cron = `${info.api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`;
        const accrued = await waitUntil(
          async () => {
            await fetch(cron);
            const e = await earned();
            return BigInt(e.bytes) >= BigInt(size) ? e : undefined;
          },
          20_000,
          "the demo peers' earnings",
        );
        console.log(
          `[stack] demo supplier earnings: ${accrued.bytes} B -> ${accrued.accruedMicro} micro-USDC`,
        );
        expect(BigInt(accrued.accruedMicro)).toBeGreaterThan(0n);
        expect(
          accrued.devices.every((d) =>
            info.peers.some((p: { deviceId: string }) => p.deviceId === d.deviceId),
          ),
        ).toBe(true);
      } finally {
        await redis.close();
      }

      // The fleet watchdog checked both demo groups through the gateway; nothing is alerting.
      const watchdog = await waitUntil(
        async () => {
          const res = await fetch(info.operator.alerts, { headers: { "x-api-key": info.operator.apiKey } });
          const body = (await res.json()) as {
            alerts: { resolvedAt: string | null }[];
            checks: { pool: string; country: string | null; ok: boolean }[];
          };
          const ok = (pool: string) => body.checks.some((c) => c.pool === pool && c.ok);
          return ok("peer") && ok("mbl") && ok("self") ? body : undefined;
        },
        20_000,
        "the watchdog's first checks",
      );
      expect(watchdog.alerts.filter((a) => a.resolvedAt === null)).toEqual([]);

      // The agent: 402 -> pay on the local chain -> retry -> credential -> curl -> credit.
      const agent = await run(process.execPath, ["scripts/demo-agent.ts"], {
        cwd: root,
        env: { ...process.env, STACK_DIR: dir },
        timeout: 60_000,
      });
      expect(agent.stdout).toMatch(/\[5\] credit: used \d+ of 100000000 bytes/);
      expect(agent.stdout).toContain("demo:agent ok");

      // `npm run audit:verify` with no DATABASE_URL checks the running local network's audit chain.
      const audit = await run(process.execPath, ["scripts/audit-verify.ts"], {
        cwd: root,
        env: { ...process.env, STACK_DIR: dir, DATABASE_URL: "", NEON_WS_PROXY: "" },
        timeout: 60_000,
      });
      expect(audit.stdout).toMatch(/audit chain ok: [1-9]\d* rows verified/);
    } finally {
      // Ctrl-C delivers SIGINT to the launcher; it must stop everything it started.
      stack.child.kill("SIGINT");
      await stack.exited;
    }
    expect(stack.output()).toContain("stopped");
    // No pool secret, API key or token in any line a process of the network logged (the JSON lines
    // of the relay, gateway, prober and API, the peers' text lines, wrangler's, tinyproxy's...).
    const childLines = stack
      .output()
      .split("\n")
      .filter((l) => /^\[[\w.-]+\] /.test(l) && !l.startsWith("[stack]"));
    expect(childLines.filter((l) => l.includes('"service":"relay"')).length).toBeGreaterThan(0);
    for (const l of childLines) expect(l).not.toMatch(/pak_|psx_|prt_|wss_|eyJ/);
    expect(await stack.exited).toBe(0);
    expect(processesMentioning(dir)).toEqual([]);
    expect(existsSync(join(dir, "stack.json"))).toBe(true);
  }, 240_000);

  it("a port already taken by a program that accepts and never answers stops the start within seconds, naming its variable", async () => {
    const dir = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "stack-taken-"));
    // A listener that completes TCP handshakes and never answers: before the check, /health hung on it.
    const squatter = createServer(() => {});
    const held = await freePort();
    await new Promise<void>((r) => squatter.listen(held, "127.0.0.1", r));
    const env: Record<string, string> = { STACK_DIR: dir };
    for (const name of ["RELAY_PORT", "RELAY_INTERNAL_PORT", "GATEWAY_HTTP_PORT", "GATEWAY_SOCKS_PORT"])
      env[name] = String(await freePort());
    env.GATEWAY_ADMIN_PORT = String(await freePort());
    env.PROBER_ADMIN_PORT = String(await freePort());
    env.API_PORT = String(held);
    const t0 = Date.now();
    const stack = startProcess("stack", process.execPath, ["dev/stack.ts"], { cwd: root, env });
    try {
      const code = await stack.exited;
      expect(code).toBe(1);
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect(stack.output()).toContain(`port ${held} (API_PORT) already in use`);
      expect(processesMentioning(dir)).toEqual([]);
    } finally {
      await stack.stop("SIGKILL");
      squatter.close();
    }
  });
});
