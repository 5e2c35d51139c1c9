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
