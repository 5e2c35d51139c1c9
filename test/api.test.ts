import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { ownRedisState } from "./helpers/env.ts";

// The API as it really runs locally: wrangler dev (workerd) in front of the run's Postgres and a
// Redis of its own (its cron would delist what other files list in the shared one).
const state = await ownRedisState("api");
const e = state.env;
let api: Api;
beforeAll(async () => {
  api = await startApi(stateVars(e), { tmp: e.PEERPROXY_TEST_TMP });
});
afterAll(async () => {
  await api?.stop();
  await state.stop();
});

describe("API under wrangler dev", () => {
  it("GET /health reaches Redis and Postgres", async () => {
    const res = await fetch(`${api.url}/health`);
    const body = await res.json();
    expect(body).toMatchObject({ status: "ok", checks: { redis: { ok: true }, postgres: { ok: true } } });
    expect(res.status).toBe(200);
  });

  it("/openapi.json is a valid OpenAPI 3.1 document", async () => {
    const doc = (await (await fetch(`${api.url}/openapi.json`)).json()) as Record<string, unknown>;
    const validator = new Validator();
    const result = await validator.validate(doc as Parameters<Validator["validate"]>[0]);
    expect(result.errors ?? [], JSON.stringify(result.errors ?? []).slice(0, 2000)).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe("3.1");
  });

  it("the cron trigger runs the job registry", async () => {
    const res = await fetch(`${api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`);
    expect(res.status).toBe(200);
  });
});
