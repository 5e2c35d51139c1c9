// A supplier's devices with their live state, as GET /v1/peer/devices answers and /farmer shows them
// (one service, services/supplier-devices.ts), inside workerd against this run's Redis and Postgres.
import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { reconcileListings } from "../src/services/listing.ts";
import { forgetDevice, markOnline } from "./helpers/presence.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
const tenants: Tenant[] = [];
const devices: string[] = [];
afterAll(async () => {
  for (const id of devices) {
    await forgetDevice(redis, id);
  }
  for (const t of tenants) await t.cleanup().catch(() => {});
  await pool.end();
});

async function supplierWithDevices() {
  const t = await createTenant(pool, redis, { kind: "supplier" });
  tenants.push(t);
  const hex = () => crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  const [listed, failing] = [`agent_${hex()}`, `agent_${hex()}`];
  devices.push(listed, failing);
  await pool.query(
    `INSERT INTO devices (id, account_id, name, ip_type, sdk_version) VALUES
       ($1, $3, 'listed-box', 'residential', '0.4.0'), ($2, $3, 'failing-box', 'mobile', '0.4.0')`,
    [listed, failing, t.accountId],
  );
  const now = Date.now();
  // "qz": a user-assigned ISO-2 code no other suite uses.
  await markOnline(redis, listed, "qz");
  await redis.hset(keys.probe(listed), {
    verified: "1",
    speedTier: "fast",
    passStreak: "2",
    failStreak: "0",
    lastResult: "ok",
    lastProbeAt: String(now - 5_000),
  });
  await markOnline(redis, failing, "qz");
  await redis.hset(keys.probe(failing), {
    verified: "0",
    speedTier: "unknown",
    passStreak: "0",
    failStreak: "1",
    lastResult: "tls_handshake_timeout",
    lastProbeAt: String(now - 3_000),
  });
  await reconcileListings({ redis, db: pool }, now, "slow");
  return { t, listed, failing };
}

describe("a supplier's devices", () => {
  it("GET /v1/peer/devices answers online, verified, listed, tier, the last probe's code and bytes; another account's key sees none of them", async () => {
    const { t, listed, failing } = await supplierWithDevices();
    const res = await SELF.fetch("http://api.test/v1/peer/devices", { headers: { "X-API-Key": t.apiKey } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { devices: Record<string, unknown>[] };
    const byId = Object.fromEntries(body.devices.map((d) => [d.deviceId, d]));
    expect(byId[listed]).toMatchObject({
      name: "listed-box",
      online: true,
      country: "QZ",
      verified: true,
      listed: true,
      speedTier: "fast",
      lastProbe: { result: "ok" },
      bytesServed: "0",
    });
    expect(byId[failing]).toMatchObject({
      online: true,
      verified: false,
      listed: false,
      speedTier: "unknown",
      lastProbe: { result: "tls_handshake_timeout" },
    });

    const other = await createTenant(pool, redis, { kind: "supplier" });
    tenants.push(other);
    const theirs = await SELF.fetch("http://api.test/v1/peer/devices", {
      headers: { "X-API-Key": other.apiKey },
    });
    expect(await theirs.json()).toEqual({ devices: [] });
    const customer = await createTenant(pool, redis, { kind: "customer" });
    tenants.push(customer);
    const noScope = await SELF.fetch("http://api.test/v1/peer/devices", {
      headers: { "X-API-Key": customer.apiKey },
    });
    expect(noScope.status).toBe(403);
  });

  it("/farmer shows the same states: listed with its tier, unverified with the failure code", async () => {
    const { t, listed, failing } = await supplierWithDevices();
    const signIn = await SELF.fetch("http://api.test/sign-in", {
      method: "POST",
      redirect: "manual",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        "cf-connecting-ip": `203.0.113.${Math.floor(Math.random() * 250)}-${crypto.randomUUID().slice(0, 8)}`,
      },
      body: new URLSearchParams({ apiKey: t.apiKey }).toString(),
    });
    const cookie = /^([^;]+);/.exec(signIn.headers.get("set-cookie") ?? "")?.[1] ?? "";
    const html = await (await SELF.fetch("http://api.test/farmer", { headers: { cookie } })).text();
    const row = (id: string) => new RegExp(`<tr data-device="${id}">([\\s\\S]*?)</tr>`).exec(html)?.[1] ?? "";
    expect(row(listed)).toMatch(/data-testid="device-state">listed</);
    expect(row(listed)).toMatch(/data-testid="speed-tier">fast</);
    expect(row(failing)).toMatch(/data-testid="device-state">unverified</);
    expect(row(failing)).toContain("tls_handshake_timeout");
  });
});
