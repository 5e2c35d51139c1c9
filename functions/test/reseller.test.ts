import { env, SELF } from "cloudflare:test";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { createPool, withTransaction } from "../../shared/db/pool.ts";
import { hashSecret } from "../../shared/ids.ts";
import { keys } from "../../shared/keys.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { createApp } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createDeps } from "../src/deps.ts";
import { credentialUsageJob } from "../src/jobs/credential-usage.ts";
import {
  mintCredential,
  type PoolKey,
  regenerateCredential,
  syncCredentialMirror,
  topupCredential,
} from "../src/services/credentials.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

// Inside workerd against this run's real Redis (through the Upstash stand-in) and real Postgres.
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
afterAll(() => pool.end());

const tenants: Tenant[] = [];
afterEach(async () => {
  for (const t of tenants.splice(0)) await t.cleanup();
});
async function tenant() {
  const t = await createTenant(pool, redis);
  tenants.push(t);
  return t;
}

type Key = PoolKey & { secret?: string };
type ErrorBody = { error: { code: string; message: string; details?: { issues: { path: string }[] } } };

function api(
  method: string,
  path: string,
  opts: {
    key?: string;
    body?: unknown;
    idem?: string;
    fetcher?: (r: Request) => Response | Promise<Response>;
  } = {},
) {
  const headers: Record<string, string> = {};
  if (opts.key) headers["x-api-key"] = opts.key;
  if (opts.idem) headers["idempotency-key"] = opts.idem;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const req = new Request(`http://api.test${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  return Promise.resolve((opts.fetcher ?? ((r: Request) => SELF.fetch(r)))(req));
}

async function createKey(t: Tenant, body: Record<string, unknown> = {}, idem?: string): Promise<Key> {
  const res = await api("POST", "/v1/reseller/pool-keys", {
    key: t.apiKey,
    body: { capBytes: 1_000_000, ...body },
    idem,
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as Key;
}

/** What the gateway's metering Lua does when a key reaches its cap (docs/internal.md). */
async function gatewaySuspendsAtCap(keyId: string, used: number) {
  await redis.eval(
    `redis.call("SET", KEYS[2], ARGV[2])
     redis.call("HSET", KEYS[1], "enabled", "0", "suspendedReason", "cap")
     redis.call("RPUSH", KEYS[3], ARGV[1])
     return 1`,
    [keys.credential(keyId), keys.credentialUsed(keyId), keys.credentialSuspendedEvents()],
    [keyId, String(used)],
  );
}

// The real app with Redis pointed at a closed loopback port: every Redis call fails.
const appWithoutRedis = createApp();
const brokenRedis = (r: Request) =>
  appWithoutRedis.fetch(
    r,
    { ...e, UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9" } as never,
    {
      waitUntil() {},
      passThroughOnException() {},
      props: {},
    } as unknown as ExecutionContext,
  );

function jobDeps() {
  return createDeps(loadConfig(e));
}

describe("POST /v1/reseller/pool-keys", () => {
  it("shows the pak_ secret once, stores only its hash, and writes the Redis mirror per the contract", async () => {
    const t = await tenant();
    const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
    const key = await createKey(t, {
      name: "scraper",
      tier: "mbl",
      country: "US",
      capBytes: 5_242_880,
      expiresAt,
      maxConnections: 12,
    });
    expect(key.id).toMatch(/^pk_[0-9a-f]{24}$/);
    expect(key.secret).toMatch(/^pak_[0-9a-f]{64}$/);
    expect(key).toMatchObject({
      tier: "mbl",
      pool: "mbl",
      country: "us",
      capBytes: 5_242_880,
      usedBytes: 0,
      enabled: true,
      maxConnections: 12,
    });
    expect(key.username).toBe(`psx_${key.accountLabel}-mbl-us`);
    expect(key.accountLabel).toMatch(/^[a-z0-9_]{1,64}$/);

    const { rows } = await pool.query("SELECT * FROM credentials WHERE id = $1", [key.id]);
    expect(rows[0]!.secret_hash).toBe(await hashSecret(key.secret!));
    expect(JSON.stringify(rows[0])).not.toContain(key.secret!.slice(4));

    expect(await redis.hgetall(keys.credential(key.id))).toEqual({
      accountLabel: key.accountLabel,
      accountId: t.accountId,
      enabled: "1",
      capBytes: "5242880",
      expiresAt: String(Date.parse(expiresAt)),
      tier: "mbl",
      maxConnections: "12",
      suspendedReason: "",
    });
    expect(await redis.get(keys.credentialSecret(await hashSecret(key.secret!)))).toBe(key.id);

    const again = (await (
      await api("GET", `/v1/reseller/pool-keys/${key.id}`, { key: t.apiKey })
    ).json()) as Key;
    expect(again.secret).toBeUndefined();
    expect(again.secretHint).toBe(`${key.secret!.slice(0, 8)}...`);
  });

  it("answers 400 E_VALIDATION naming the offending field", async () => {
    const t = await tenant();
    const cases: [unknown, string][] = [
      [{ capBytes: -1 }, "capBytes"],
      [{ capBytes: 1.5 }, "capBytes"],
      [{}, "capBytes"],
      [{ capBytes: 10, tier: "gold" }, "tier"],
      [{ capBytes: 10, tier: "mbl", pool: "peer" }, "pool"],
      [{ capBytes: 10, country: "usa" }, "country"],
      [{ capBytes: 10, expiresAt: "2001-01-01T00:00:00Z" }, "expiresAt"],
      [{ capBytes: 10, maxConnections: 0 }, "maxConnections"],
    ];
    for (const [body, field] of cases) {
      const res = await api("POST", "/v1/reseller/pool-keys", { key: t.apiKey, body });
      const err = (await res.json()) as ErrorBody;
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(err.error.code).toBe("E_VALIDATION");
      expect(err.error.message).toContain(field);
      expect(err.error.details!.issues.map((i) => i.path)).toContain(field);
    }
    const patch = await api("PATCH", "/v1/reseller/pool-keys/pk_000000000000000000000000", {
      key: t.apiKey,
      body: { maxConnections: "many" },
    });
    expect(patch.status).toBe(400);
    expect(((await patch.json()) as ErrorBody).error.message).toContain("maxConnections");
    const usage = await api("GET", "/v1/reseller/pool-keys/pk_000000000000000000000000/usage?days=400", {
      key: t.apiKey,
    });
    expect(usage.status).toBe(400);
    expect(((await usage.json()) as ErrorBody).error.message).toContain("days");
    const { rows } = await pool.query("SELECT 1 FROM credentials WHERE account_id = $1", [t.accountId]);
    expect(rows).toHaveLength(0);
  });
});

describe("authentication and tenancy", () => {
  it("answers 401 for a missing, malformed, unknown or revoked X-API-Key", async () => {
    const t = await tenant();
    for (const key of [undefined, "nope", `psx_${"0".repeat(48)}`]) {
      const res = await api("GET", "/v1/reseller/pool-keys", { key });
      expect(res.status, String(key)).toBe(401);
      expect(((await res.json()) as ErrorBody).error.code).toBe("E_UNAUTHORIZED");
    }
    expect((await api("GET", "/v1/reseller/pool-keys", { key: t.apiKey })).status).toBe(200);
    await pool.query("UPDATE api_keys SET revoked_at = now() WHERE id = $1", [t.apiKeyId]);
    expect((await api("GET", "/v1/reseller/pool-keys", { key: t.apiKey })).status).toBe(401);
    expect(
      (await api("POST", "/v1/reseller/pool-keys", { key: t.apiKey, body: { capBytes: 1 } })).status,
    ).toBe(401);
    // Authentication comes before validation: no schema details for anonymous callers.
    const anonymous = await api("POST", "/v1/reseller/pool-keys", { body: { capBytes: -1 } });
    expect(anonymous.status).toBe(401);
  });

  it("another account's key answers 404 on every verb and is left unchanged", async () => {
    const owner = await tenant();
    const other = await tenant();
    const key = await createKey(owner);
    const base = `/v1/reseller/pool-keys/${key.id}`;
    const attempts: [string, string, unknown][] = [
      ["GET", base, undefined],
      ["PATCH", base, { enabled: false }],
      ["POST", `${base}/topup`, { addBytes: 5 }],
      ["POST", `${base}/regenerate`, undefined],
      ["GET", `${base}/usage`, undefined],
      ["DELETE", base, undefined],
    ];
    for (const [method, path, body] of attempts) {
      const res = await api(method, path, { key: other.apiKey, body });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(((await res.json()) as ErrorBody).error.code).toBe("E_NOT_FOUND");
    }
    const list = (await (await api("GET", "/v1/reseller/pool-keys", { key: other.apiKey })).json()) as {
      keys: Key[];
    };
    expect(list.keys).toEqual([]);
    const still = (await (await api("GET", base, { key: owner.apiKey })).json()) as Key;
    expect(still).toMatchObject({ enabled: true, capBytes: 1_000_000 });
    expect(await redis.get(keys.credentialSecret(await hashSecret(key.secret!)))).toBe(key.id);
  });
});

describe("GET/PATCH/DELETE /v1/reseller/pool-keys/{id}", () => {
  it("lists and gets keys with live used bytes; patch and delete update the mirror in the same request", async () => {
    const t = await tenant();
    const a = await createKey(t, { name: "a" });
    const b = await createKey(t, { name: "b", tier: "peer" });
    const list = (await (await api("GET", "/v1/reseller/pool-keys", { key: t.apiKey })).json()) as {
      keys: Key[];
      nextAfter: string | null;
    };
    expect(list.keys.map((k) => k.id)).toEqual([a.id, b.id]);
    const page = (await (await api("GET", "/v1/reseller/pool-keys?limit=1", { key: t.apiKey })).json()) as {
      keys: Key[];
      nextAfter: string;
    };
    expect(page.keys.map((k) => k.id)).toEqual([a.id]);
    const page2 = (await (
      await api("GET", `/v1/reseller/pool-keys?limit=1&after=${page.nextAfter}`, { key: t.apiKey })
    ).json()) as { keys: Key[] };
    expect(page2.keys.map((k) => k.id)).toEqual([b.id]);

    await redis.set(keys.credentialUsed(a.id), "250000");
    const got = (await (await api("GET", `/v1/reseller/pool-keys/${a.id}`, { key: t.apiKey })).json()) as Key;
    expect(got).toMatchObject({ usedBytes: 250_000, remainingBytes: 750_000, enabled: true });

    const patched = await api("PATCH", `/v1/reseller/pool-keys/${a.id}`, {
      key: t.apiKey,
      body: { enabled: false, maxConnections: 7, name: "renamed", expiresAt: "2099-01-01T00:00:00Z" },
    });
    expect(patched.status).toBe(200);
    expect(await patched.json()).toMatchObject({
      enabled: false,
      suspendedReason: "disabled",
      maxConnections: 7,
      name: "renamed",
      usedBytes: 250_000,
      expiresAt: "2099-01-01T00:00:00.000Z",
    });
    expect(await redis.hgetall(keys.credential(a.id))).toMatchObject({
      enabled: "0",
      suspendedReason: "disabled",
      maxConnections: "7",
      expiresAt: String(Date.parse("2099-01-01T00:00:00Z")),
    });
    const reenabled = await api("PATCH", `/v1/reseller/pool-keys/${a.id}`, {
      key: t.apiKey,
      body: { enabled: true, expiresAt: null },
    });
    expect(await reenabled.json()).toMatchObject({ enabled: true, suspendedReason: null, expiresAt: null });
    expect(await redis.hgetall(keys.credential(a.id))).toMatchObject({
      enabled: "1",
      suspendedReason: "",
      expiresAt: "0",
    });

    const del = await api("DELETE", `/v1/reseller/pool-keys/${a.id}`, { key: t.apiKey });
    expect(del.status).toBe(200);
    expect(await del.json()).toEqual({ id: a.id, deleted: true });
    expect(await redis.hgetall(keys.credential(a.id))).toEqual({});
    expect(await redis.get(keys.credentialSecret(await hashSecret(a.secret!)))).toBeNull();
    expect((await api("GET", `/v1/reseller/pool-keys/${a.id}`, { key: t.apiKey })).status).toBe(404);
    // A repeated delete is 404 and still removes a mirror a failed Redis write left behind.
    await redis.hset(keys.credential(a.id), { enabled: "1" });
    await redis.set(keys.credentialSecret(await hashSecret(a.secret!)), a.id);
    expect((await api("DELETE", `/v1/reseller/pool-keys/${a.id}`, { key: t.apiKey })).status).toBe(404);
    expect(await redis.hgetall(keys.credential(a.id))).toEqual({});
    expect(await redis.get(keys.credentialSecret(await hashSecret(a.secret!)))).toBeNull();
    const after = (await (await api("GET", "/v1/reseller/pool-keys", { key: t.apiKey })).json()) as {
      keys: Key[];
    };
    expect(after.keys.map((k) => k.id)).toEqual([b.id]);
  });
});

describe("topup and regenerate", () => {
  it("topup re-enables a key the gateway suspended at its cap; a patch alone cannot", async () => {
    const t = await tenant();
    const key = await createKey(t, { capBytes: 1000 });
    await gatewaySuspendsAtCap(key.id, 1000);

    // The cron records the gateway's suspension in Postgres and the audit log.
    const { deps, dispose } = jobDeps();
    try {
      const out = await credentialUsageJob.run(deps);
      expect(out.suspended).toBeGreaterThanOrEqual(1);
    } finally {
      await dispose();
    }
    const { rows } = await pool.query("SELECT enabled, suspended_reason FROM credentials WHERE id = $1", [
      key.id,
    ]);
    expect(rows[0]).toEqual({ enabled: false, suspended_reason: "cap" });
    const got = (await (
      await api("GET", `/v1/reseller/pool-keys/${key.id}`, { key: t.apiKey })
    ).json()) as Key;
    expect(got).toMatchObject({ enabled: false, suspendedReason: "cap", remainingBytes: 0 });

    const patched = await api("PATCH", `/v1/reseller/pool-keys/${key.id}`, {
      key: t.apiKey,
      body: { enabled: true },
    });
    expect(await patched.json()).toMatchObject({ enabled: false, suspendedReason: "cap" });
    expect(await redis.hgetall(keys.credential(key.id))).toMatchObject({
      enabled: "0",
      suspendedReason: "cap",
    });

    const res = await api("POST", `/v1/reseller/pool-keys/${key.id}/topup`, {
      key: t.apiKey,
      body: { addBytes: 5000 },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      enabled: true,
      suspendedReason: null,
      capBytes: 6000,
      usedBytes: 1000,
      remainingBytes: 5000,
    });
    expect(await redis.hgetall(keys.credential(key.id))).toMatchObject({
      enabled: "1",
      suspendedReason: "",
      capBytes: "6000",
    });
  });

  it("topup does not re-enable a key its owner disabled", async () => {
    const t = await tenant();
    const key = await createKey(t, { capBytes: 1000 });
    await api("PATCH", `/v1/reseller/pool-keys/${key.id}`, { key: t.apiKey, body: { enabled: false } });
    const res = await api("POST", `/v1/reseller/pool-keys/${key.id}/topup`, {
      key: t.apiKey,
      body: { addBytes: 1 },
    });
    expect(await res.json()).toMatchObject({ enabled: false, suspendedReason: "disabled", capBytes: 1001 });
    expect(await redis.hgetall(keys.credential(key.id))).toMatchObject({ enabled: "0", capBytes: "1001" });
  });

  it("regenerate issues a new secret under the same username; the old secret stops resolving in Redis at once", async () => {
    const t = await tenant();
    const key = await createKey(t, { tier: "peer", country: "de" });
    const res = await api("POST", `/v1/reseller/pool-keys/${key.id}/regenerate`, { key: t.apiKey });
    expect(res.status).toBe(200);
    const next = (await res.json()) as Key;
    expect(next.id).toBe(key.id);
    expect(next.username).toBe(key.username);
    expect(next.secret).toMatch(/^pak_[0-9a-f]{64}$/);
    expect(next.secret).not.toBe(key.secret);
    expect(await redis.get(keys.credentialSecret(await hashSecret(next.secret!)))).toBe(key.id);
    expect(await redis.get(keys.credentialSecret(await hashSecret(key.secret!)))).toBeNull();
    const { rows } = await pool.query("SELECT secret_hash FROM credentials WHERE id = $1", [key.id]);
    expect(rows[0]!.secret_hash).toBe(await hashSecret(next.secret!));
  });

  it("with Redis down a write answers 503 and changes nothing", async () => {
    const t = await tenant();
    const key = await createKey(t);
    const failed = await api("POST", `/v1/reseller/pool-keys/${key.id}/regenerate`, {
      key: t.apiKey,
      fetcher: brokenRedis,
    });
    expect(failed.status).toBe(503);
    expect(((await failed.json()) as ErrorBody).error.code).toBe("E_UNAVAILABLE");
    const { rows } = await pool.query("SELECT secret_hash FROM credentials WHERE id = $1", [key.id]);
    expect(rows[0]!.secret_hash).toBe(await hashSecret(key.secret!));
  });

  it("a regenerate committed without its Redis write leaves no old secret working after the next write", async () => {
    const t = await tenant();
    const key = await createKey(t);
    // Postgres committed, the mirror write never happened (what a Redis failure after commit leaves).
    await withTransaction(pool, (tx) =>
      regenerateCredential({
        deps: { db: tx, now: () => new Date() },
        input: { accountId: t.accountId, actor: "test", keyId: key.id },
      }),
    );
    expect(await redis.get(keys.credentialSecret(await hashSecret(key.secret!)))).toBe(key.id);
    const next = (await (
      await api("POST", `/v1/reseller/pool-keys/${key.id}/regenerate`, { key: t.apiKey })
    ).json()) as Key;
    expect(await redis.get(keys.credentialSecret(await hashSecret(key.secret!)))).toBeNull();
    expect(await redis.get(keys.credentialSecret(await hashSecret(next.secret!)))).toBe(key.id);
    const { rows } = await pool.query("SELECT retired_secret_hashes FROM credentials WHERE id = $1", [
      key.id,
    ]);
    expect(rows[0]!.retired_secret_hashes).toEqual([]);
  });

  it("the cron disables a key at its expiry, and a new expiry re-enables it", async () => {
    const t = await tenant();
    const key = await createKey(t, { expiresAt: new Date(Date.now() + 60_000).toISOString() });
    await pool.query("UPDATE credentials SET expires_at = now() - interval '1 second' WHERE id = $1", [
      key.id,
    ]);
    const { deps, dispose } = jobDeps();
    try {
      const out = await credentialUsageJob.run(deps);
      expect(out.expired).toBeGreaterThanOrEqual(1);
    } finally {
      await dispose();
    }
    expect(await redis.hgetall(keys.credential(key.id))).toMatchObject({
      enabled: "0",
      suspendedReason: "expired",
    });
    const got = (await (
      await api("GET", `/v1/reseller/pool-keys/${key.id}`, { key: t.apiKey })
    ).json()) as Key;
    expect(got).toMatchObject({ enabled: false, suspendedReason: "expired" });
    const audit = await pool.query(
      "SELECT actor FROM audit_log WHERE subject = $1 AND action = 'credential.expire'",
      [key.id],
    );
    expect(audit.rows).toEqual([{ actor: "cron:credential-usage" }]);

    const later = new Date(Date.now() + 86_400_000).toISOString();
    const res = await api("PATCH", `/v1/reseller/pool-keys/${key.id}`, {
      key: t.apiKey,
      body: { expiresAt: later },
    });
    expect(await res.json()).toMatchObject({ enabled: true, suspendedReason: null });
    expect(await redis.hgetall(keys.credential(key.id))).toMatchObject({
      enabled: "1",
      expiresAt: String(Date.parse(later)),
    });
  });
});

describe("Idempotency-Key", () => {
  it("the same key and body replay the first response (secret included) without a second credential", async () => {
    const t = await tenant();
    const idem = `create-${crypto.randomUUID()}`;
    const first = await createKey(t, { name: "once" }, idem);
    const replay = await api("POST", "/v1/reseller/pool-keys", {
      key: t.apiKey,
      body: { capBytes: 1_000_000, name: "once" },
      idem,
    });
    expect(replay.status).toBe(201);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.json()).toEqual(first);
    const { rows } = await pool.query("SELECT id FROM credentials WHERE account_id = $1", [t.accountId]);
    expect(rows).toHaveLength(1);
    // The stored response is sealed: the secret is not readable from Postgres.
    const stored = await pool.query<{ response: string }>(
      "SELECT response FROM idempotency_keys WHERE account_id = $1",
      [t.accountId],
    );
    expect(stored.rows[0]!.response).not.toContain(first.secret!.slice(4));

    const topupIdem = `topup-${crypto.randomUUID()}`;
    for (let i = 0; i < 3; i++) {
      const res = await api("POST", `/v1/reseller/pool-keys/${first.id}/topup`, {
        key: t.apiKey,
        body: { addBytes: 10 },
        idem: topupIdem,
      });
      expect(res.status).toBe(200);
      expect(((await res.json()) as Key).capBytes).toBe(1_000_010);
    }
  });

  it("the same key with a different body answers 409 E_IDEMPOTENCY_MISMATCH and changes nothing", async () => {
    const t = await tenant();
    const idem = `k-${crypto.randomUUID()}`;
    await createKey(t, { capBytes: 100 }, idem);
    const res = await api("POST", "/v1/reseller/pool-keys", { key: t.apiKey, body: { capBytes: 200 }, idem });
    expect(res.status).toBe(409);
    expect(((await res.json()) as ErrorBody).error.code).toBe("E_IDEMPOTENCY_MISMATCH");
    const { rows } = await pool.query("SELECT cap_bytes FROM credentials WHERE account_id = $1", [
      t.accountId,
    ]);
    expect(rows).toEqual([{ cap_bytes: "100" }]);
  });

  it("concurrent requests with one key create exactly one credential", async () => {
    const t = await tenant();
    const idem = `race-${crypto.randomUUID()}`;
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        api("POST", "/v1/reseller/pool-keys", { key: t.apiKey, body: { capBytes: 77 }, idem }),
      ),
    );
    const bodies = (await Promise.all(results.map((r) => r.json()))) as Key[];
    expect(results.map((r) => r.status)).toEqual([201, 201, 201, 201, 201]);
    expect(new Set(bodies.map((b) => b.id)).size).toBe(1);
    const { rows } = await pool.query("SELECT id FROM credentials WHERE account_id = $1", [t.accountId]);
    expect(rows).toHaveLength(1);
  });

  it("a failed Redis write answers 503 and a retry with the same key repairs the mirror", async () => {
    const t = await tenant();
    const idem = `flaky-${crypto.randomUUID()}`;
    const body = { capBytes: 4242 };
    const failed = await api("POST", "/v1/reseller/pool-keys", {
      key: t.apiKey,
      body,
      idem,
      fetcher: brokenRedis,
    });
    expect(failed.status).toBe(503);
    expect(((await failed.json()) as ErrorBody).error.code).toBe("E_UNAVAILABLE");
    const { rows } = await pool.query<{ id: string; secret_hash: string }>(
      "SELECT id, secret_hash FROM credentials WHERE account_id = $1",
      [t.accountId],
    );
    expect(rows).toHaveLength(1);
    expect(await redis.hgetall(keys.credential(rows[0]!.id))).toEqual({});

    const retried = await api("POST", "/v1/reseller/pool-keys", { key: t.apiKey, body, idem });
    expect(retried.status).toBe(201);
    const key = (await retried.json()) as Key;
    expect(key.id).toBe(rows[0]!.id);
    expect(await hashSecret(key.secret!)).toBe(rows[0]!.secret_hash);
    expect(await redis.hgetall(keys.credential(key.id))).toMatchObject({ capBytes: "4242", enabled: "1" });
    expect(await redis.get(keys.credentialSecret(rows[0]!.secret_hash))).toBe(key.id);
  });
});

describe("audit and usage", () => {
  it("every change appends an audit row, and none carries a secret", async () => {
    const t = await tenant();
    const key = await createKey(t);
    await api("PATCH", `/v1/reseller/pool-keys/${key.id}`, { key: t.apiKey, body: { maxConnections: 3 } });
    await api("POST", `/v1/reseller/pool-keys/${key.id}/topup`, { key: t.apiKey, body: { addBytes: 1 } });
    const regen = (await (
      await api("POST", `/v1/reseller/pool-keys/${key.id}/regenerate`, { key: t.apiKey })
    ).json()) as Key;
    await api("DELETE", `/v1/reseller/pool-keys/${key.id}`, { key: t.apiKey });
    const { rows } = await pool.query<{ actor: string; action: string; detail: unknown }>(
      "SELECT actor, action, detail FROM audit_log WHERE subject = $1 ORDER BY id",
      [key.id],
    );
    expect(rows.map((r) => r.action)).toEqual([
      "credential.create",
      "credential.update",
      "credential.topup",
      "credential.regenerate",
      "credential.delete",
    ]);
    expect(rows.every((r) => r.actor === t.accountId)).toBe(true);
    const all = JSON.stringify(rows);
    expect(all).not.toContain(key.secret!.slice(4, 40));
    expect(all).not.toContain(regen.secret!.slice(4, 40));
    await expect(pool.query("DELETE FROM audit_log WHERE subject = $1", [key.id])).rejects.toThrow(
      /append-only/,
    );
  });

  it("the persist job turns credused into a per-day series; today's point stays live between runs", async () => {
    const t = await tenant();
    const key = await createKey(t, { capBytes: 10_000_000 });
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const today = new Date().toISOString().slice(0, 10);
    await pool.query("INSERT INTO credential_usage_daily (credential_id, day, bytes) VALUES ($1, $2, 700)", [
      key.id,
      yesterday,
    ]);

    await redis.set(keys.credentialUsed(key.id), "1000");
    const { deps, dispose } = jobDeps();
    try {
      await credentialUsageJob.run(deps);
      const persisted = await pool.query(
        "SELECT bytes FROM credential_usage_daily WHERE credential_id = $1 AND day = $2",
        [key.id, today],
      );
      expect(persisted.rows).toEqual([{ bytes: "1000" }]);

      await redis.set(keys.credentialUsed(key.id), "1500");
      const live = (await (
        await api("GET", `/v1/reseller/pool-keys/${key.id}/usage?days=3`, { key: t.apiKey })
      ).json()) as {
        days: { date: string; bytes: number }[];
        usedBytes: number;
        capBytes: number;
      };
      expect(live.days).toHaveLength(3);
      expect(live.days[0]).toEqual({
        date: new Date(Date.now() - 2 * 86_400_000).toISOString().slice(0, 10),
        bytes: 0,
      });
      expect(live.days[1]).toEqual({ date: yesterday, bytes: 700 });
      expect(live.days[2]).toEqual({ date: today, bytes: 1500 });
      expect(live).toMatchObject({ usedBytes: 1500, capBytes: 10_000_000 });

      await credentialUsageJob.run(deps);
      await credentialUsageJob.run(deps); // no new bytes: nothing added twice
      const after = await pool.query(
        "SELECT bytes FROM credential_usage_daily WHERE credential_id = $1 AND day = $2",
        [key.id, today],
      );
      expect(after.rows).toEqual([{ bytes: "1500" }]);
    } finally {
      await dispose();
    }
    const def = (await (
      await api("GET", `/v1/reseller/pool-keys/${key.id}/usage`, { key: t.apiKey })
    ).json()) as { days: unknown[] };
    expect(def.days).toHaveLength(30);
  });
});

// The gateway's own authenticate (gateway-node/auth.ts), imported untyped because it is Node code
// outside this tsconfig; workerd runs it under nodejs_compat against the same Redis.
type GatewayAuth = (
  deps: { redis: unknown; now: () => number; authFailLimit: number },
  input: { credentials: { username: string; password: string }; clientIp: string },
) => Promise<{ keyId: string; tier: string; maxConnections: number; route: { pool: string } }>;

describe("the gateway reads what the API writes", () => {
  it("a key created through the API authenticates at the gateway; regenerate, cap and delete take effect there", async () => {
    const { authenticate } = (await import("../../gateway-node/auth.ts")) as unknown as {
      authenticate: GatewayAuth;
    };
    const t = await tenant();
    const key = await createKey(t, { tier: "mbl", capBytes: 1000, maxConnections: 4 });
    const clientIp = `127.0.0.${Math.floor(Math.random() * 200) + 2}`;
    const login = (password: string, username = `${key.username}-sid-abcdefgh`) =>
      authenticate(
        { redis, now: () => Date.now(), authFailLimit: 1000 },
        { credentials: { username, password }, clientIp },
      );
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => "ok",
        (err: { code?: string }) => err.code ?? String(err),
      );

    const principal = await login(key.secret!, `psx_${key.accountLabel}-peer-us`);
    // The quality contract: an mbl key routes to mbl whatever the username asks.
    expect(principal).toMatchObject({
      keyId: key.id,
      tier: "mbl",
      maxConnections: 4,
      route: { pool: "mbl" },
    });

    const regen = (await (
      await api("POST", `/v1/reseller/pool-keys/${key.id}/regenerate`, { key: t.apiKey })
    ).json()) as Key;
    expect(await codeOf(login(key.secret!))).toBe("E_AUTH_INVALID");
    expect(await codeOf(login(regen.secret!))).toBe("ok");

    await gatewaySuspendsAtCap(key.id, 1000);
    expect(await codeOf(login(regen.secret!))).toBe("E_CAP_EXCEEDED");
    await api("POST", `/v1/reseller/pool-keys/${key.id}/topup`, { key: t.apiKey, body: { addBytes: 1 } });
    expect(await codeOf(login(regen.secret!))).toBe("ok");

    await api("PATCH", `/v1/reseller/pool-keys/${key.id}`, { key: t.apiKey, body: { enabled: false } });
    expect(await codeOf(login(regen.secret!))).toBe("E_CREDENTIAL_SUSPENDED");
    await api("DELETE", `/v1/reseller/pool-keys/${key.id}`, { key: t.apiKey });
    expect(await codeOf(login(regen.secret!))).toBe("E_AUTH_INVALID");
  });
});

describe("service functions for x402", () => {
  it("mintCredential commits or rolls back with the caller's transaction; topupCredential raises the cap", async () => {
    const t = await tenant();
    const now = () => new Date();
    await expect(
      withTransaction(pool, async (tx) => {
        await mintCredential({
          deps: { db: tx, now },
          input: { accountId: t.accountId, actor: "x402:test", tier: "mbl", capBytes: 100 },
        });
        throw new Error("payment insert failed");
      }),
    ).rejects.toThrow("payment insert failed");
    expect(
      (await pool.query("SELECT 1 FROM credentials WHERE account_id = $1", [t.accountId])).rows,
    ).toHaveLength(0);

    const minted = await withTransaction(pool, (tx) =>
      mintCredential({
        deps: { db: tx, now },
        input: {
          accountId: t.accountId,
          actor: "x402:test",
          tier: "mbl",
          capBytes: 100,
          expiresAt: new Date(Date.now() + 3_600_000),
        },
      }),
    );
    expect(minted!.secret).toMatch(/^pak_/);
    expect(minted!.credential.pool).toBe("mbl");
    await syncCredentialMirror({ db: pool, redis }, minted!.credential.id);
    expect(await redis.hgetall(keys.credential(minted!.credential.id))).toMatchObject({
      tier: "mbl",
      capBytes: "100",
    });

    const topped = await withTransaction(pool, (tx) =>
      topupCredential({
        deps: { db: tx, now },
        input: { accountId: t.accountId, actor: "x402:test", keyId: minted!.credential.id, addBytes: 50 },
      }),
    );
    expect(topped!.cap_bytes).toBe("150");
  });

  it("the reseller routes appear in /openapi.json with the X-API-Key scheme", async () => {
    const doc = (await (await SELF.fetch("http://api.test/openapi.json")).json()) as {
      paths: Record<string, Record<string, unknown>>;
      components: { securitySchemes: Record<string, unknown> };
    };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/v1/reseller/pool-keys",
        "/v1/reseller/pool-keys/{id}",
        "/v1/reseller/pool-keys/{id}/topup",
        "/v1/reseller/pool-keys/{id}/regenerate",
        "/v1/reseller/pool-keys/{id}/usage",
      ]),
    );
    expect(Object.keys(doc.paths["/v1/reseller/pool-keys/{id}"]!).sort()).toEqual(["delete", "get", "patch"]);
    expect(doc.components.securitySchemes.ApiKey).toMatchObject({
      type: "apiKey",
      in: "header",
      name: "X-API-Key",
    });
  });
});
