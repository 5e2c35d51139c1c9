import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createAccountWithKey } from "../../shared/accounts.ts";
import { createPool } from "../../shared/db/pool.ts";
import { deriveDeviceId, type PeerClaims, verifyJwt } from "../../shared/jwt.ts";
import { keys } from "../../shared/keys.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { createApp } from "../src/app.ts";

const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
afterAll(() => pool.end());

// Each test gets its own account and its own client IP, so rate limits and limits never collide.
let ipSeq = 0;
async function tenant(limits: { maxDevices?: number; maxUnproven?: number } = {}) {
  const t = await createAccountWithKey(pool, { name: `test-${crypto.randomUUID()}`, kind: "supplier" });
  if (limits.maxDevices !== undefined || limits.maxUnproven !== undefined) {
    await pool.query("UPDATE accounts SET max_devices = $2, max_unproven_devices = $3 WHERE id = $1", [
      t.accountId,
      limits.maxDevices ?? null,
      limits.maxUnproven ?? null,
    ]);
  }
  const ip = `198.51.100.${(ipSeq++ % 250) + 1}-${crypto.randomUUID().slice(0, 6)}`;
  return { ...t, ip };
}

function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  return SELF.fetch(`http://api.test${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

type Ident = {
  deviceId: string;
  token: string;
  jwt: string;
  refreshToken: string;
  relay: string;
  ipType: string;
  earningsPerGB: Record<string, string>;
};

async function register(
  t: { apiKey: string; ip: string },
  name: string,
  extra: Record<string, unknown> = {},
) {
  return post(
    "/v1/peer/agents/register",
    { name, apiKey: t.apiKey, type: "custom", sdkVersion: "test/1", ...extra },
    { "cf-connecting-ip": t.ip },
  );
}

describe("POST /v1/peer/agents/register", () => {
  it("assigns the relay of the region listing the device's country hint, else the default region's", async () => {
    // The seeded settings (migration 0002): us = US/CA/MX (the default), eu = DE/FR/GB/NL/ES/IT/PL.
    const t = await tenant();
    const relayOf = async (name: string, country?: string) =>
      ((await (await register(t, name, country ? { country } : {})).json()) as Ident).relay;
    expect(await relayOf("region-de", "de")).toBe("wss://relay-eu.peerproxy.dev");
    expect(await relayOf("region-mx", "MX")).toBe("wss://relay-us.peerproxy.dev");
    expect(await relayOf("region-jp", "JP")).toBe("wss://relay-us.peerproxy.dev");
    expect(await relayOf("region-none")).toBe("wss://relay-us.peerproxy.dev");
  });

  it("returns a deviceId derived from sha256(apiKey:name), a 1 h JWT, a refresh token, relay and live rates", async () => {
    const t = await tenant();
    const res = await register(t, "rig-001");
    expect(res.status).toBe(200);
    const body = (await res.json()) as Ident;
    expect(body.deviceId).toBe(await deriveDeviceId(t.apiKey, "rig-001"));
    expect(body.token).toBe(body.jwt);
    const v = await verifyJwt<PeerClaims>(body.jwt, e.JWT_SECRET!, Math.floor(Date.now() / 1000));
    expect(v.ok).toBe(true);
    if (v.ok) {
      expect(v.claims).toMatchObject({ sub: body.deviceId, acct: t.accountId, kind: "peer", gen: 1 });
      expect(v.claims.exp - v.claims.iat).toBe(3600);
    }
    expect(body.refreshToken).toMatch(/^prt_[0-9a-f]{64}$/);
    expect(body.relay).toMatch(/^wss?:\/\//);
    expect(body.earningsPerGB).toHaveProperty("mobile");
    expect(body.ipType).toMatch(/^(mobile|residential|datacenter)$/);
    const stored = await pool.query<{ token_hash: string }>(
      "SELECT token_hash FROM refresh_tokens WHERE device_id = $1",
      [body.deviceId],
    );
    expect(stored.rows[0]!.token_hash).not.toContain(body.refreshToken.slice(4, 20));
  });

  it("a second registration with the same name returns the same deviceId, no new row, and revokes older JWTs", async () => {
    const t = await tenant();
    const first = (await (await register(t, "rig-002")).json()) as Ident;
    const second = (await (await register(t, "rig-002")).json()) as Ident;
    expect(second.deviceId).toBe(first.deviceId);
    const rows = await pool.query("SELECT id FROM devices WHERE account_id = $1", [t.accountId]);
    expect(rows.rowCount).toBe(1);
    const claims1 = (await verifyJwt<PeerClaims>(first.jwt, e.JWT_SECRET!, 0)) as {
      ok: true;
      claims: PeerClaims;
    };
    const claims2 = (await verifyJwt<PeerClaims>(second.jwt, e.JWT_SECRET!, 0)) as {
      ok: true;
      claims: PeerClaims;
    };
    expect(claims2.claims.gen).toBe(claims1.claims.gen + 1);
    expect(Number(await redis.get(keys.deviceGen(first.deviceId)))).toBe(claims2.claims.gen);
  });

  it("ignores the device's claimed type: ipType comes from the server side", async () => {
    const t = await tenant();
    const body = (await (
      await register(t, "liar", { type: "mobile", connectionMethod: "mobile" })
    ).json()) as Ident;
    const row = await pool.query<{ ip_type: string }>("SELECT ip_type FROM devices WHERE id = $1", [
      body.deviceId,
    ]);
    expect(row.rows[0]!.ip_type).toBe(body.ipType);
    // No request.cf in the test runtime and no dev override: unknown networks are residential.
    expect(body.ipType).toBe("residential");
    // The relay takes the class from the token, so the device cannot pick it there either.
    const v = await verifyJwt<PeerClaims>(body.jwt, e.JWT_SECRET!, 0);
    expect(v.ok && v.claims.ipType).toBe("residential");
  });

  it("an empty walletAddress is a 400 that names the field", async () => {
    const t = await tenant();
    const res = await register(t, "w", { walletAddress: "" });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("E_VALIDATION");
    expect(body.error.message).toContain("walletAddress");
  });

  it("a missing or unknown apiKey is a 401", async () => {
    const t = await tenant();
    const unknown = await register({ ...t, apiKey: `psx_${"0".repeat(48)}` }, "x");
    expect(unknown.status).toBe(401);
    const missing = await post("/v1/peer/agents/register", { name: "x" }, { "cf-connecting-ip": t.ip });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { error: { message: string } }).error.message).toContain("apiKey");
  });

  it("the device limit answers 403 E_DEVICE_LIMIT once the account is full", async () => {
    const t = await tenant({ maxDevices: 2, maxUnproven: 100 });
    expect((await register(t, "a")).status).toBe(200);
    expect((await register(t, "b")).status).toBe(200);
    const third = await register(t, "c");
    expect(third.status).toBe(403);
    expect(((await third.json()) as { error: { code: string } }).error.code).toBe("E_DEVICE_LIMIT");
    // Re-registering an existing device is not a new device.
    expect((await register(t, "a")).status).toBe(200);
  });

  it("the unproven guard stops new devices until one serves traffic, which frees a place at once", async () => {
    const t = await tenant({ maxDevices: 100, maxUnproven: 2 });
    const a = (await (await register(t, "u1")).json()) as Ident;
    await register(t, "u2");
    const blocked = await register(t, "u3");
    expect(blocked.status).toBe(403);
    expect(((await blocked.json()) as { error: { code: string } }).error.code).toBe("E_UNPROVEN_LIMIT");
    // The relay marks a device that served a byte; the next registration sees it.
    await redis.sadd(keys.servedDevices(), a.deviceId);
    expect((await register(t, "u3")).status).toBe(200);
    const proven = await pool.query<{ proven_at: string | null }>(
      "SELECT proven_at FROM devices WHERE id = $1",
      [a.deviceId],
    );
    expect(proven.rows[0]!.proven_at).not.toBeNull();
  });

  it("rate limits registration per client IP with 429 and Retry-After", async () => {
    const t = await tenant();
    const limit = 30; // RATE_LIMIT_REGISTER_PER_MINUTE default
    const statuses: number[] = [];
    for (let i = 0; i < limit + 1; i++) statuses.push((await register(t, `rl-${i % 3}`)).status);
    expect(statuses.slice(0, limit).every((s) => s === 200)).toBe(true);
    const res = await register(t, "rl-0");
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    // Another address is unaffected.
    expect((await register({ ...t, ip: `${t.ip}-other` }, "rl-0")).status).toBe(200);
  });
});

describe("refresh", () => {
  it("POST /v1/peer/token/{id}/refresh returns a new JWT and keeps the refresh token valid", async () => {
    const t = await tenant();
    const id = (await (await register(t, "r1")).json()) as Ident;
    const path = `/v1/peer/token/${id.deviceId}/refresh`;
    const a = await post(path, { refreshToken: id.refreshToken }, { "cf-connecting-ip": t.ip });
    const b = await post(path, { refreshToken: id.refreshToken }, { "cf-connecting-ip": t.ip });
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    const body = (await a.json()) as { token: string; jwt: string };
    expect(body.token).toBe(body.jwt);
    expect((await verifyJwt<PeerClaims>(body.jwt, e.JWT_SECRET!, 0)).ok).toBe(true);
  });

  it("POST /v1/peer/agents/{id}/refresh rotates: the old refresh token is spent, the new one works", async () => {
    const t = await tenant();
    const id = (await (await register(t, "r2")).json()) as Ident;
    const path = `/v1/peer/agents/${id.deviceId}/refresh`;
    const first = (await (
      await post(path, { refreshToken: id.refreshToken }, { "cf-connecting-ip": t.ip })
    ).json()) as Ident;
    expect(first.refreshToken).toMatch(/^prt_/);
    expect(first.refreshToken).not.toBe(id.refreshToken);
    const reuse = await post(path, { refreshToken: id.refreshToken }, { "cf-connecting-ip": t.ip });
    expect(reuse.status).toBe(401);
    expect(
      (await post(path, { refreshToken: first.refreshToken }, { "cf-connecting-ip": t.ip })).status,
    ).toBe(200);
  });

  it("concurrent rotations of one refresh token succeed exactly once", async () => {
    const t = await tenant();
    const id = (await (await register(t, "r3")).json()) as Ident;
    const path = `/v1/peer/agents/${id.deviceId}/refresh`;
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        post(path, { refreshToken: id.refreshToken }, { "cf-connecting-ip": t.ip }),
      ),
    );
    expect(results.map((r) => r.status).sort()).toEqual([200, 401, 401, 401, 401]);
  });

  it("a database at its connection limit answers 503 E_UNAVAILABLE with Retry-After, not a 500", async () => {
    // A role allowed no connections: Postgres refuses it with SQLSTATE 53300, the error a burst of
    // refreshes past max_connections gets (bench fault d: 257 such 500s sent devices round 30 s more).
    await pool.query(
      `DO $$ BEGIN CREATE ROLE pp_no_room LOGIN PASSWORD 'no-room' CONNECTION LIMIT 0;
       EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
    );
    const url = new URL(e.DATABASE_URL!);
    url.username = "pp_no_room";
    url.password = "no-room";
    const res = await createApp().fetch(
      new Request(`http://api.test/v1/peer/agents/agent_0000000000000000/refresh`, {
        method: "POST",
        headers: { "content-type": "application/json", "cf-connecting-ip": "198.51.100.254" },
        body: JSON.stringify({ refreshToken: "prt_whatever" }),
      }),
      { ...env, DATABASE_URL: url.toString() } as never,
      { waitUntil() {}, passThroughOnException() {}, props: {} } as unknown as ExecutionContext,
    );
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(res.status, JSON.stringify(body)).toBe(503);
    expect(body.error.code).toBe("E_UNAVAILABLE");
    expect(body.error.message).toMatch(/database/);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
  });

  it("a refresh token of another device is refused", async () => {
    const t = await tenant();
    const a = (await (await register(t, "ra")).json()) as Ident;
    const b = (await (await register(t, "rb")).json()) as Ident;
    const res = await post(
      `/v1/peer/token/${b.deviceId}/refresh`,
      { refreshToken: a.refreshToken },
      { "cf-connecting-ip": t.ip },
    );
    expect(res.status).toBe(401);
  });
});

describe("Android-style routes", () => {
  it("POST /v1/peer/register with X-API-Key returns {device:{deviceId}, token, relay}; GET token works for the owner only", async () => {
    const t = await tenant();
    const res = await post(
      "/v1/peer/register",
      { deviceName: "pixel-7" },
      { "x-api-key": t.apiKey, "cf-connecting-ip": t.ip },
    );
    expect(res.status).toBe(200);
    const body = (await res.json()) as { device: { deviceId: string }; token: string; relay: string };
    expect(body.device.deviceId).toBe(await deriveDeviceId(t.apiKey, "pixel-7"));
    expect(body.relay).toMatch(/^wss?:\/\//);
    const tok = await SELF.fetch(`http://api.test/v1/peer/token/${body.device.deviceId}`, {
      headers: { "x-api-key": t.apiKey, "cf-connecting-ip": t.ip },
    });
    expect(tok.status).toBe(200);
    expect(((await tok.json()) as { token: string }).token.split(".")).toHaveLength(3);
    const other = await tenant();
    const denied = await SELF.fetch(`http://api.test/v1/peer/token/${body.device.deviceId}`, {
      headers: { "x-api-key": other.apiKey, "cf-connecting-ip": other.ip },
    });
    expect(denied.status).toBe(404);
  });
});
