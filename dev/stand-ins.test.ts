import { Redis as Upstash } from "@upstash/redis";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../shared/db/pool.ts";
import { upstashRedis } from "../shared/redis.ts";
import { stateEnv } from "../test/helpers/env.ts";

const e = stateEnv();

describe("Upstash REST stand-in", () => {
  const raw = new Upstash({
    url: e.UPSTASH_REDIS_REST_URL,
    token: e.UPSTASH_REDIS_REST_TOKEN,
    automaticDeserialization: false,
  });
  const r = upstashRedis(e.UPSTASH_REDIS_REST_URL, e.UPSTASH_REDIS_REST_TOKEN);
  const k = `t:${crypto.randomUUID()}`;

  it("round-trips non-ASCII and binary-looking strings through base64 encoding", async () => {
    const value = 'héllo "world" \u0000 ✓';
    await r.set(k, value);
    expect(await r.get(k)).toBe(value);
  });

  it("returns HGETALL as the flat array Upstash sends", async () => {
    await r.hset(`${k}:h`, { a: "1", b: "two" });
    expect(await r.hgetall(`${k}:h`)).toEqual({ a: "1", b: "two" });
  });

  it("runs pipelines and multi-exec with per-command errors", async () => {
    const p = raw.pipeline();
    p.set(`${k}:p`, "1");
    p.incr(`${k}:p`);
    const out = await p.exec();
    expect(out).toEqual(["OK", 2]);
    const m = raw.multi();
    m.incr(`${k}:p`);
    m.get(`${k}:p`);
    expect(await m.exec()).toEqual([3, "3"]);
  });

  it("passes Redis error text through unchanged", async () => {
    await expect(r.evalsha("0".repeat(40), [], [])).rejects.toThrow(/NOSCRIPT/);
  });

  it("refuses a wrong token", async () => {
    const bad = upstashRedis(e.UPSTASH_REDIS_REST_URL, "wrong");
    await expect(bad.ping()).rejects.toThrow();
  });
});

describe("Neon WebSocket proxy", () => {
  const pool = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
  afterAll(() => pool.end());

  it("carries real queries, transactions and parameters to Postgres", async () => {
    const { rows } = await pool.query<{ n: number; s: string }>("SELECT $1::int + 1 AS n, $2::text AS s", [
      41,
      "ok",
    ]);
    expect(rows[0]).toEqual({ n: 42, s: "ok" });
  });

  it("end() returns promptly because the proxy ends TCP on Terminate", async () => {
    const p = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
    await p.query("SELECT 1");
    const t0 = Date.now();
    await p.end();
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});
