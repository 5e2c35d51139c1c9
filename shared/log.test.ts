import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { signJwt } from "./jwt.ts";
import { createLogger, memoryLogger, textLine } from "./log.ts";
import { errorLimiter } from "./log-core.ts";

// Secrets shaped as the services mint them (functions/src/services, shared/accounts.ts).
const poolKey = `pak_${"a1".repeat(32)}`;
const apiKey = `psx_${"b2".repeat(24)}`;
const refreshToken = `prt_${"c3".repeat(32)}`;
const sessionToken = `wss_${"d4".repeat(32)}`;
const jwt = await signJwt({ sub: "agent_0123456789abcdef", gen: 1 }, "x".repeat(32));
const relaySecret = "relay-shared-secret-0123456789abcdef";

/** Nothing a secret starts with, nor any secret itself, anywhere in the lines. */
function expectClean(lines: string[]) {
  const all = lines.join("\n");
  for (const s of [poolKey, apiKey, refreshToken, sessionToken, jwt, relaySecret])
    expect(all).not.toContain(s);
  expect(all).not.toMatch(/pak_|psx_|prt_|wss_|eyJ/);
}

describe("log redaction", () => {
  it("censors secret fields by name, at the top level and under headers", () => {
    const lines: string[] = [];
    const log = memoryLogger(lines);
    log.info(
      {
        token: "opaque-value",
        refreshToken: "opaque-refresh",
        apiKey: "opaque-key",
        password: "hunter2",
        headers: { authorization: `Bearer ${relaySecret}`, "proxy-authorization": "Basic dXNlcjpwYXNz" },
      },
      "request",
    );
    const o = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(o).toMatchObject({
      token: "[redacted]",
      refreshToken: "[redacted]",
      apiKey: "[redacted]",
      password: "[redacted]",
      headers: { authorization: "[redacted]", "proxy-authorization": "[redacted]" },
    });
    expect(lines[0]).not.toContain("hunter2");
    expect(lines[0]).not.toContain(relaySecret);
  });

  it("scrubs pak_, psx_, JWT, refresh and session tokens wherever they hide: messages, errors, unknown fields, child bindings", () => {
    const lines: string[] = [];
    const log = memoryLogger(lines);
    log.warn(`auth failed for ${apiKey}:${poolKey}`);
    log.error({ err: new Error(`upstream said ${refreshToken}`) }, "refresh failed");
    log.info({ detail: { cookie2: `session=${sessionToken}`, sent: `Authorization: Bearer ${jwt}` } }, "x");
    log
      .child({ requestId: "req_1", username: `psx_acme-peer-US-sid-1` })
      .info({ url: `wss://r/?token=${jwt}` }, "y");
    expect(lines).toHaveLength(4);
    expectClean(lines);
    // What is left still says what was there, and the non-secret context survives.
    expect(lines[0]).toContain("[redacted:psx]:[redacted:pak]");
    expect(lines[3]).toContain('"requestId":"req_1"');
    expect(lines[3]).toContain("[redacted:jwt]");
  });

  it("the human format is `[EVENT] message key=value`, level-prefixed for warnings, and scrubbed too", () => {
    const out: string[] = [];
    const log = createLogger({
      service: "peer",
      format: "text",
      destination: { write: (l) => void out.push(l) },
    });
    log.info({ event: "REGISTERED" }, "device=agent_1 name=n1");
    log.warn({ key: apiKey }, "bad key");
    expect(out[0]).toBe("[REGISTERED] device=agent_1 name=n1\n");
    expect(out[1]).toBe("[WARN] bad key key=[redacted:psx]\n");
    expect(textLine("not json")).toBe("not json");
  });
});

describe("connection error rate limit", () => {
  it("lets one line per cause through per window and counts what it held back", () => {
    let t = 0;
    const pass = errorLimiter(30_000, () => t);
    expect(pass("ECONNREFUSED")).toEqual({ suppressed: 0 });
    expect(pass("ECONNREFUSED")).toBeNull();
    expect(pass("ETIMEDOUT")).toEqual({ suppressed: 0 });
    t = 10_000;
    expect(pass("ECONNREFUSED")).toBeNull();
    t = 30_001;
    expect(pass("ECONNREFUSED")).toEqual({ suppressed: 2 });
  });
});

describe("daemon stdout (loggerFromEnv, JSON)", () => {
  // A child process: the stream is process-wide and writes to the real stdout.
  const script = `
    import { loggerFromEnv } from ${JSON.stringify(join(import.meta.dirname, "log.ts"))};
    let writes = 0;
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = (...args) => { writes++; return write(...args); };
    const relay = loggerFromEnv("relay", {});
    const other = loggerFromEnv("gateway", {});
    for (let i = 0; i < 100; i++) (i % 2 ? other : relay).info({ i }, "line");
    setImmediate(() => {
      process.stderr.write("writes after the first turn: " + writes + "\\n");
      relay.info({ i: 100 }, "last words");
      process.exit(3);
    });
  `;

  it("writes a turn's lines in one write, in order, and what is pending when the process exits", () => {
    const out = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    expect(out.status).toBe(3);
    expect(out.stderr).toContain("writes after the first turn: 1\n");
    const lines = out.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { i: number; service: string });
    expect(lines.map((l) => l.i)).toEqual(Array.from({ length: 101 }, (_, i) => i));
    expect(lines[1]!.service).toBe("gateway");
  });
});
