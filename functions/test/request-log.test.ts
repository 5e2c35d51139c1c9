import { env } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../src/app.ts";

// Inside workerd: the app's own console output, as Workers Logs would collect it. The suite runs
// with ENVIRONMENT=test, which keeps the request line out of test output; these run as development.
const app = createApp();
const bindings = { ...env, ENVIRONMENT: "development" };
const call = (path: string, headers: Record<string, string> = {}) =>
  app.fetch(
    new Request(`http://api.test${path}`, { headers }),
    bindings as never,
    {
      waitUntil() {},
      passThroughOnException() {},
      props: {},
    } as unknown as ExecutionContext,
  );

afterEach(() => vi.restoreAllMocks());

function requestLines(spy: { mock: { calls: unknown[][] } }): Record<string, unknown>[] {
  return spy.mock.calls
    .map((args) => String(args[0]))
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((o) => o.msg === "request");
}

describe("the API's request log", () => {
  it("writes one JSON line per request carrying the request id of the X-Request-ID answer header", async () => {
    const spy = vi.spyOn(console, "log");
    const res = await call("/health?probe=1");
    const id = res.headers.get("x-request-id");
    expect(id).toMatch(/^req_/);
    const lines = requestLines(spy);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ service: "api", requestId: id, method: "GET", path: "/health" });
    expect(lines[0]!.status).toBe(res.status);
    expect(JSON.stringify(lines[0])).not.toContain("probe=1"); // never the query string
  });

  it("keeps a caller's X-Request-ID (the gateway's req_ form) in the answer and the log line", async () => {
    const spy = vi.spyOn(console, "log");
    const res = await call("/health", { "x-request-id": "req_0123456789abcdef0123" });
    expect(res.headers.get("x-request-id")).toBe("req_0123456789abcdef0123");
    expect(requestLines(spy)).toEqual([expect.objectContaining({ requestId: "req_0123456789abcdef0123" })]);
  });

  it("never logs a secret: an API key in a header stays out of the line", async () => {
    const spy = vi.spyOn(console, "log");
    await call("/v1/admin/accounts", { "x-api-key": `psx_${"ab".repeat(24)}` });
    const all = spy.mock.calls.map((a) => a.join(" ")).join("\n");
    expect(requestLines(spy)).toHaveLength(1);
    expect(all).not.toMatch(/psx_|pak_|prt_|eyJ/);
  });
});
