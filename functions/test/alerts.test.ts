import { env, SELF } from "cloudflare:test";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { randomHex } from "../../shared/ids.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

// Inside workerd against this run's real Redis and Postgres. The watchdog (prober/watchdog.ts) is
// the writer of these tables; here the rows are written by hand, with scopes unique to this test.
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
afterAll(() => pool.end());

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const done of cleanups.splice(0).reverse()) await done();
});

async function tenant(kind: "operator" | "customer"): Promise<Tenant> {
  const t = await createTenant(pool, redis, { kind });
  cleanups.push(t.cleanup);
  return t;
}

const get = (path: string, key?: string) =>
  SELF.fetch(`http://api.test${path}`, { headers: key ? { "x-api-key": key } : {} });

type Body = {
  alerts: {
    id: string;
    kind: string;
    scope: string;
    detail: Record<string, unknown>;
    openedAt: string;
    lastSeenAt: string;
    resolvedAt: string | null;
  }[];
  checks: {
    pool: string;
    country: string | null;
    runAt: string;
    ok: boolean;
    latencyMs: number | null;
    error: string | null;
  }[];
};

describe("GET /v1/admin/alerts", () => {
  it("an operator sees open watchdog alerts and the latest check per pool and country", async () => {
    const op = await tenant("operator");
    // Two-letter codes no other test uses; x402/stock tests use real ones.
    const country = `v${"abcdefghijklmnopqrstuvwxyz"[Math.floor(Math.random() * 26)]}`;
    const scope = `peer-${country}`;
    const openId = `alert_${randomHex(12)}`;
    const resolvedId = `alert_${randomHex(12)}`;
    cleanups.push(async () => {
      await pool.query("DELETE FROM alerts WHERE id = ANY($1::text[])", [[openId, resolvedId]]);
      await pool.query("DELETE FROM watchdog_checks WHERE pool = 'peer' AND country = $1", [country]);
    });
    await pool.query(
      `INSERT INTO alerts (id, kind, scope, detail, opened_at, last_seen_at, resolved_at) VALUES
       ($1, 'watchdog_fleet', $3, '{"error": "tls_failed", "consecutiveFailures": 2}', now() - interval '3 minutes', now() - interval '2 minutes', now() - interval '1 minute'),
       ($2, 'watchdog_fleet', $3, '{"error": "no_exit", "consecutiveFailures": 2}', now(), now(), NULL)`,
      [resolvedId, openId, scope],
    );
    await pool.query(
      `INSERT INTO watchdog_checks (run_at, pool, country, ok, latency_ms, error) VALUES
       (now() - interval '1 minute', 'peer', $1, true, 140, NULL),
       (now(), 'peer', $1, false, NULL, 'no_exit')`,
      [country],
    );

    const res = await get("/v1/admin/alerts?open=true", op.apiKey);
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const body = (await res.json()) as Body;
    const mine = body.alerts.filter((a) => a.scope === scope);
    expect(mine).toEqual([
      {
        id: openId,
        kind: "watchdog_fleet",
        scope,
        detail: { error: "no_exit", consecutiveFailures: 2 },
        openedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        lastSeenAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        resolvedAt: null,
      },
    ]);
    expect(body.alerts.every((a) => a.resolvedAt === null)).toBe(true);
    expect(body.checks.filter((c) => c.country === country)).toEqual([
      { pool: "peer", country, runAt: expect.any(String), ok: false, latencyMs: null, error: "no_exit" },
    ]);

    const all = (await (await get("/v1/admin/alerts", op.apiKey)).json()) as Body;
    expect(all.alerts.filter((a) => a.scope === scope).map((a) => [a.id, a.resolvedAt !== null])).toEqual([
      [openId, false],
      [resolvedId, true],
    ]);
  });

  it("needs an operator key: 401 without one, 403 for a customer, 400 for a bad filter", async () => {
    expect((await get("/v1/admin/alerts?open=true")).status).toBe(401);
    const customer = await tenant("customer");
    const forbidden = await get("/v1/admin/alerts?open=true", customer.apiKey);
    expect(forbidden.status).toBe(403);
    // A customer's key lacks `operate` (and `ops-agent`): the 403 names the scope.
    expect(((await forbidden.json()) as { error: { code: string } }).error.code).toBe("E_SCOPE_REQUIRED");
    const op = await tenant("operator");
    expect((await get("/v1/admin/alerts?open=yes", op.apiKey)).status).toBe(400);
  });
});
