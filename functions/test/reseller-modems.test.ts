import { env, SELF } from "cloudflare:test";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { openUpstreamAuth } from "../../shared/upstream-auth.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

// Inside workerd against this run's real Redis and Postgres; modem addresses are loopback only.
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
afterAll(() => pool.end());

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const done of cleanups.splice(0).reverse()) await done();
});

async function operator(kind: "operator" | "customer" = "operator"): Promise<Tenant> {
  const t = await createTenant(pool, redis, { kind });
  cleanups.push(t.cleanup);
  return t;
}

/** Registers a loopback "modem" port unique to this test, and removes every trace afterwards. */
function uniquePort() {
  const port = 20_000 + Math.floor(Math.random() * 40_000);
  cleanups.push(async () => {
    const { rows } = await pool.query<{ id: string }>(
      "SELECT id FROM modem_exits WHERE host = '127.0.0.1' AND port = $1",
      [port],
    );
    for (const r of rows) {
      await redis.eval(
        'redis.call("SREM", KEYS[2], ARGV[1]) return redis.call("DEL", KEYS[1])',
        [keys.endpoint(r.id), keys.poolListed()],
        [r.id],
      );
    }
    await pool.query("DELETE FROM modem_exits WHERE host = '127.0.0.1' AND port = $1", [port]);
  });
  return port;
}

function call(method: string, path: string, key: string | undefined, body?: unknown) {
  return SELF.fetch(`http://api.test${path}`, {
    method,
    headers: {
      ...(key ? { "x-api-key": key } : {}),
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
}

const isListed = async (id: string) =>
  Number(await redis.eval('return redis.call("SISMEMBER", KEYS[1], ARGV[1])', [keys.poolListed()], [id]));

describe("/v1/admin/modem-exits", () => {
  it("an operator registers a modem exit: it is listed in pool mbl with modem caps, and audited", async () => {
    const op = await operator();
    const port = uniquePort();
    const res = await call("POST", "/v1/admin/modem-exits", op.apiKey, {
      host: "127.0.0.1",
      port,
      country: "US",
      carrier: "tmobile",
    });
    expect(res.status).toBe(201);
    const exit = (await res.json()) as { id: string };
    expect(exit).toMatchObject({
      host: "127.0.0.1",
      port,
      country: "us",
      carrier: "tmobile",
      ipType: "mobile",
      pool: "mbl",
    });
    expect(exit.id).toMatch(/^modem_[0-9a-f]{16}$/);
    expect(await redis.hgetall(keys.endpoint(exit.id))).toMatchObject({
      pool: "mbl",
      kind: "modem",
      host: "127.0.0.1",
      port: String(port),
      country: "us",
      maxConns: "6",
      maxCusts: "3",
    });
    expect(await isListed(exit.id)).toBe(1);

    const again = await call("POST", "/v1/admin/modem-exits", op.apiKey, {
      host: "127.0.0.1",
      port,
      country: "de",
    });
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ id: exit.id, country: "de" });
    expect((await redis.hgetall(keys.endpoint(exit.id))).country).toBe("de");

    const list = (await (await call("GET", "/v1/admin/modem-exits", op.apiKey)).json()) as {
      exits: { id: string }[];
    };
    expect(list.exits.map((x) => x.id)).toContain(exit.id);

    const del = await call("DELETE", `/v1/admin/modem-exits/${exit.id}`, op.apiKey);
    expect(del.status).toBe(200);
    expect(await isListed(exit.id)).toBe(0);
    expect((await call("DELETE", `/v1/admin/modem-exits/${exit.id}`, op.apiKey)).status).toBe(404);

    const { rows } = await pool.query<{ action: string }>(
      "SELECT action FROM audit_log WHERE subject = $1 ORDER BY id",
      [exit.id],
    );
    expect(rows.map((r) => r.action)).toEqual([
      "modem_exit.create",
      "modem_exit.update",
      "modem_exit.delete",
    ]);
  });

  it("refuses customers (403) and anonymous callers (401), and names a bad field (400)", async () => {
    const customer = await operator("customer");
    const op = await operator();
    const port = uniquePort();
    expect(
      (
        await call("POST", "/v1/admin/modem-exits", customer.apiKey, {
          host: "127.0.0.1",
          port,
          country: "us",
        })
      ).status,
    ).toBe(403);
    expect((await call("GET", "/v1/admin/modem-exits", undefined)).status).toBe(401);
    const bad = await call("POST", "/v1/admin/modem-exits", op.apiKey, {
      host: "127.0.0.1",
      port: 70_000,
      country: "us",
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain("port");
    const { rows } = await pool.query("SELECT 1 FROM modem_exits WHERE port = $1", [port]);
    expect(rows).toHaveLength(0);
  });
});

describe("modem upstream credentials", () => {
  it("are stored sealed in Postgres and Redis, never echoed, and open with MODEM_UPSTREAM_KEY; null clears them", async () => {
    const op = await operator();
    const port = uniquePort();
    const password = `pw-${crypto.randomUUID()}`;
    const res = await call("POST", "/v1/admin/modem-exits", op.apiKey, {
      host: "127.0.0.1",
      port,
      country: "us",
      upstreamAuth: { username: "modemuser", password },
    });
    expect(res.status).toBe(201);
    const text = await res.text();
    expect(text).not.toContain(password);
    const exit = JSON.parse(text) as { id: string; upstreamAuth: boolean };
    expect(exit.upstreamAuth).toBe(true);
    const { rows } = await pool.query<{ upstream_auth_sealed: string }>(
      "SELECT upstream_auth_sealed FROM modem_exits WHERE id = $1",
      [exit.id],
    );
    const sealed = rows[0]?.upstream_auth_sealed ?? "";
    expect(sealed).toMatch(/^v1\./);
    expect(sealed).not.toContain(password);
    const listed = await redis.hgetall(keys.endpoint(exit.id));
    expect(listed.upstreamAuth).toBe(sealed);
    expect(await openUpstreamAuth(e.MODEM_UPSTREAM_KEY ?? "", sealed)).toEqual({
      username: "modemuser",
      password,
    });
    const audit = await pool.query<{ detail: unknown }>("SELECT detail FROM audit_log WHERE subject = $1", [
      exit.id,
    ]);
    expect(JSON.stringify(audit.rows)).not.toContain(password);

    // Re-registering without the field keeps them; null clears them.
    await call("POST", "/v1/admin/modem-exits", op.apiKey, { host: "127.0.0.1", port, country: "de" });
    expect((await redis.hgetall(keys.endpoint(exit.id))).upstreamAuth).toBe(sealed);
    const cleared = await call("POST", "/v1/admin/modem-exits", op.apiKey, {
      host: "127.0.0.1",
      port,
      country: "de",
      upstreamAuth: null,
    });
    expect(await cleared.json()).toMatchObject({ id: exit.id, upstreamAuth: false });
    expect((await redis.hgetall(keys.endpoint(exit.id))).upstreamAuth ?? "").toBe("");
  });
});
