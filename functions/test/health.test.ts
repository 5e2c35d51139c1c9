import { env, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app.ts";

// These run inside workerd (the real Workers runtime) against the real Redis and Postgres of this run.
const app = createApp();
const call = (path: string, bindings: Record<string, unknown>) =>
  app.fetch(
    new Request(`http://api.test${path}`),
    bindings as never,
    {
      waitUntil() {},
      passThroughOnException() {},
      props: {},
    } as unknown as ExecutionContext,
  );

describe("GET /health inside workerd", () => {
  it("answers 200 only after really reaching Redis and Postgres", async () => {
    const res = await SELF.fetch("http://api.test/health");
    const body = (await res.json()) as {
      status: string;
      checks: Record<string, { ok: boolean; error?: string }>;
    };
    expect(body.checks.redis, JSON.stringify(body)).toMatchObject({ ok: true });
    expect(body.checks.postgres, JSON.stringify(body)).toMatchObject({ ok: true });
    expect(res.status).toBe(200);
    expect(body.status).toBe("ok");
    expect(res.headers.get("x-request-id")).toMatch(/^req_/);
  });

  it("answers 503 naming redis when Redis is unreachable", async () => {
    const res = await call("/health", { ...env, UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9" });
    const body = (await res.json()) as { status: string; checks: Record<string, { ok: boolean }> };
    expect(res.status).toBe(503);
    expect(body.status).toBe("degraded");
    expect(body.checks.redis!.ok).toBe(false);
    expect(body.checks.postgres!.ok).toBe(true);
  });

  it("answers 503 naming postgres when Postgres is unreachable", async () => {
    const res = await call("/health", { ...env, DATABASE_URL: "postgres://nobody:x@127.0.0.1:9/none" });
    const body = (await res.json()) as { status: string; checks: Record<string, { ok: boolean }> };
    expect(res.status).toBe(503);
    expect(body.checks.postgres!.ok).toBe(false);
    expect(body.checks.redis!.ok).toBe(true);
  });
});

describe("configuration fails closed", () => {
  it("answers 503 E_CONFIG naming the bad variable on every route", async () => {
    for (const path of ["/health", "/openapi.json", "/nope"]) {
      const res = await call(path, { ...env, DATABASE_URL: "mysql://x" });
      const body = (await res.json()) as { error: { code: string; message: string; requestId: string } };
      expect(res.status).toBe(503);
      expect(body.error.code).toBe("E_CONFIG");
      expect(body.error.message).toContain("DATABASE_URL");
      expect(body.error.requestId).toMatch(/^req_/);
    }
  });

  it("refuses the dev-only Neon proxy in production", async () => {
    const res = await call("/health", { ...env, ENVIRONMENT: "production" });
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(res.status).toBe(503);
    expect(body.error.message).toContain("NEON_WS_PROXY");
  });
});

describe("errors and OpenAPI", () => {
  it("an unknown route gets the one error shape with the request id echoed", async () => {
    const res = await SELF.fetch("http://api.test/v1/nope", {
      headers: { "x-request-id": "client-req-12345" },
    });
    expect(res.status).toBe(404);
    expect(res.headers.get("x-request-id")).toBe("client-req-12345");
    const body = (await res.json()) as { error: Record<string, string> };
    expect(body.error).toMatchObject({ code: "E_NOT_FOUND", requestId: "client-req-12345" });
    expect(body.error.docs).toContain("e_not_found");
  });

  it("serves an OpenAPI 3.1 document that includes /health", async () => {
    const res = await SELF.fetch("http://api.test/openapi.json");
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths)).toContain("/health");
  });
});
