import { env, SELF } from "cloudflare:test";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { hashSecret } from "../../shared/ids.ts";
import { keys } from "../../shared/keys.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { createApp } from "../src/app.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

// The access boundary (issue 16, ADRs 0009-0011) inside workerd against this run's real Redis and
// Postgres: operator-managed accounts and scoped keys, rotation, resell limits, revocation.
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
afterAll(() => pool.end());

const tenants: Tenant[] = [];
afterEach(async () => {
  for (const t of tenants.splice(0)) await t.cleanup();
});
async function tenant(opts: Parameters<typeof createTenant>[2] = {}) {
  const t = await createTenant(pool, redis, opts);
  tenants.push(t);
  return t;
}

type ErrorBody = { error: { code: string; message: string; details?: Record<string, unknown> } };
type KeyInfo = {
  keyId: string;
  accountId: string;
  scopes: string[];
  hint: string;
  status: string;
  expiresAt: string | null;
  rotatedTo: string | null;
  apiKey?: string;
};

let ipSeq = 0;
function call(method: string, path: string, opts: { key?: string; body?: unknown; ip?: string } = {}) {
  const headers: Record<string, string> = {
    // Each call its own client address: the identity routes rate-limit per IP.
    "cf-connecting-ip": opts.ip ?? `203.0.113.${(ipSeq++ % 250) + 1}-${crypto.randomUUID().slice(0, 6)}`,
  };
  if (opts.key) headers["x-api-key"] = opts.key;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  return SELF.fetch(`http://api.test${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
}

async function json<T>(res: Response, status: number): Promise<T> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  return JSON.parse(text) as T;
}

/** An operator creates an account and issues it one key with `scopes`, all through the API. */
async function provision(op: Tenant, kind: string, scopes: string[], extra: Record<string, unknown> = {}) {
  const account = await json<{ accountId: string }>(
    await call("POST", "/v1/admin/accounts", { key: op.apiKey, body: { name: `a-${kind}`, kind, ...extra } }),
    201,
  );
  const key = await json<KeyInfo & { apiKey: string }>(
    await call("POST", `/v1/admin/accounts/${account.accountId}/api-keys`, {
      key: op.apiKey,
      body: { scopes },
    }),
    201,
  );
  tenants.push({
    accountId: account.accountId,
    apiKey: key.apiKey,
    apiKeyId: key.keyId,
    async cleanup() {
      await pool.query("DELETE FROM idempotency_keys WHERE account_id = $1", [account.accountId]);
      const creds = await pool.query<{ id: string; secret_hash: string }>(
        "SELECT id, secret_hash FROM credentials WHERE account_id = $1",
        [account.accountId],
      );
      const redisKeys = creds.rows.flatMap((r) => [
        keys.credential(r.id),
        keys.credentialUsed(r.id),
        keys.credentialSecret(r.secret_hash),
      ]);
      if (redisKeys.length) await redis.del(...redisKeys);
      await pool.query("DELETE FROM credentials WHERE account_id = $1", [account.accountId]);
      // Accounts with devices stay (earnings rows point at devices); the run's database is thrown away.
    },
  });
  return { accountId: account.accountId, apiKey: key.apiKey, keyId: key.keyId };
}

const register = (apiKey: string, name: string, ip?: string) =>
  call("POST", "/v1/peer/agents/register", {
    body: { name, apiKey, type: "custom", sdkVersion: "test/1" },
    ip,
  });

describe("operator account and key routes", () => {
  it("an operator creates an account, issues a scoped key shown once and stored hashed, lists keys without secrets, and revokes at once", async () => {
    const op = await tenant({ kind: "operator" });
    const acct = await json<{ accountId: string; kind: string }>(
      await call("POST", "/v1/admin/accounts", { key: op.apiKey, body: { name: "acme", kind: "reseller" } }),
      201,
    );
    expect(acct.accountId).toMatch(/^acct_/);
    expect(acct.kind).toBe("reseller");

    const issued = await json<KeyInfo & { apiKey: string }>(
      await call("POST", `/v1/admin/accounts/${acct.accountId}/api-keys`, {
        key: op.apiKey,
        body: { scopes: ["resell"] },
      }),
      201,
    );
    expect(issued.apiKey).toMatch(/^psx_[0-9a-f]{48}$/);
    expect(issued).toMatchObject({ accountId: acct.accountId, scopes: ["resell"], status: "active" });
    const stored = await pool.query<{ key_hash: string }>("SELECT key_hash FROM api_keys WHERE id = $1", [
      issued.keyId,
    ]);
    expect(stored.rows[0]!.key_hash).toBe(await hashSecret(issued.apiKey));

    const listed = await json<{ keys: KeyInfo[] }>(
      await call("GET", `/v1/admin/accounts/${acct.accountId}/api-keys`, { key: op.apiKey }),
      200,
    );
    expect(listed.keys.map((k) => k.keyId)).toEqual([issued.keyId]);
    expect(JSON.stringify(listed)).not.toContain(issued.apiKey);
    expect(JSON.stringify(listed)).not.toContain(stored.rows[0]!.key_hash);

    // The key works, then stops the moment it is revoked.
    const poolKeys = () => call("GET", "/v1/reseller/pool-keys", { key: issued.apiKey });
    expect((await poolKeys()).status).toBe(200);
    const revoked = await json<KeyInfo>(
      await call("DELETE", `/v1/admin/api-keys/${issued.keyId}`, { key: op.apiKey }),
      200,
    );
    expect(revoked.status).toBe("revoked");
    expect((await poolKeys()).status).toBe(401);
    await pool.query("DELETE FROM api_keys WHERE account_id = $1", [acct.accountId]);
    await pool.query("DELETE FROM accounts WHERE id = $1", [acct.accountId]);
  });

  it("only a human operator's key reaches the account routes: none 401, customer and ops-agent keys 403 naming the scope", async () => {
    const customer = await tenant({ kind: "customer" });
    const opsAgent = await tenant({ kind: "ops" });
    const body = { name: "x", kind: "supplier" };
    expect((await call("POST", "/v1/admin/accounts", { body })).status).toBe(401);
    for (const t of [customer, opsAgent]) {
      const res = await json<ErrorBody>(
        await call("POST", "/v1/admin/accounts", { key: t.apiKey, body }),
        403,
      );
      expect(res.error.code).toBe("E_SCOPE_REQUIRED");
      expect(res.error.details).toEqual({ requiredScope: "operate" });
      expect(res.error.message).toContain("`operate`");
      const del = await call("DELETE", `/v1/admin/api-keys/${t.apiKeyId}`, { key: t.apiKey });
      expect(del.status).toBe(403);
    }
    // An ops-agent may read alerts (read-only), a customer may not.
    expect((await call("GET", "/v1/admin/alerts", { key: opsAgent.apiKey })).status).toBe(200);
    expect((await call("GET", "/v1/admin/alerts", { key: customer.apiKey })).status).toBe(403);
  });

  it("validates kind and scopes and answers 404 for an unknown account or key", async () => {
    const op = await tenant({ kind: "operator" });
    const bad = await json<ErrorBody>(
      await call("POST", "/v1/admin/accounts", { key: op.apiKey, body: { name: "x", kind: "wizard" } }),
      400,
    );
    expect(bad.error.message).toContain("kind");
    const badScope = await json<ErrorBody>(
      await call("POST", `/v1/admin/accounts/${op.accountId}/api-keys`, {
        key: op.apiKey,
        body: { scopes: ["root"] },
      }),
      400,
    );
    expect(badScope.error.message).toContain("scopes");
    expect(
      (
        await call("POST", "/v1/admin/accounts/acct_nobody000000/api-keys", {
          key: op.apiKey,
          body: { scopes: ["supply"] },
        })
      ).status,
    ).toBe(404);
    expect((await call("DELETE", "/v1/admin/api-keys/key_0000000000000000", { key: op.apiKey })).status).toBe(
      404,
    );
  });

  it("documents every account and key route with its error responses in /openapi.json", async () => {
    const doc = (await (await SELF.fetch("http://api.test/openapi.json")).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    const expectations: [string, string, string[]][] = [
      ["/v1/admin/accounts", "post", ["201", "400", "401", "403"]],
      ["/v1/admin/accounts/{id}/api-keys", "post", ["201", "400", "401", "403", "404"]],
      ["/v1/admin/accounts/{id}/api-keys", "get", ["200", "401", "403", "404"]],
      ["/v1/admin/api-keys/{keyId}", "delete", ["200", "401", "403", "404", "503"]],
      ["/v1/account/api-keys/{keyId}/rotate", "post", ["200", "401", "403", "404", "409"]],
      ["/v1/reseller/pool-keys", "post", ["201", "401", "403"]],
    ];
    for (const [path, method, statuses] of expectations) {
      const op = doc.paths[path]?.[method];
      expect(op, `${method} ${path}`).toBeDefined();
      for (const s of statuses) expect(op!.responses, `${method} ${path} ${s}`).toHaveProperty(s);
    }
  });
});

describe("scopes on every route", () => {
  it("a supply key on POST /v1/reseller/pool-keys is 403 naming `resell`, and mints nothing", async () => {
    const supplier = await tenant({ kind: "supplier" });
    const res = await json<ErrorBody>(
      await call("POST", "/v1/reseller/pool-keys", { key: supplier.apiKey, body: { capBytes: 10 ** 12 } }),
      403,
    );
    expect(res.error.code).toBe("E_SCOPE_REQUIRED");
    expect(res.error.details).toEqual({ requiredScope: "resell" });
    expect(res.error.message).toContain("`resell`");
    const { rows } = await pool.query("SELECT 1 FROM credentials WHERE account_id = $1", [
      supplier.accountId,
    ]);
    expect(rows).toHaveLength(0);
  });

  it("a resell key cannot register devices or read earnings (403 naming `supply`); a supply key can", async () => {
    const reseller = await tenant({ kind: "reseller" });
    const supplier = await tenant({ kind: "supplier" });
    const reg = await json<ErrorBody>(await register(reseller.apiKey, "box"), 403);
    expect(reg.error.code).toBe("E_SCOPE_REQUIRED");
    expect(reg.error.details).toEqual({ requiredScope: "supply" });
    const android = await call("POST", "/v1/peer/register", {
      body: { name: "box" },
      key: reseller.apiKey,
    });
    expect(android.status).toBe(403);
    expect((await call("GET", "/v1/peer/earnings", { key: reseller.apiKey })).status).toBe(403);
    expect((await register(supplier.apiKey, "box")).status).toBe(200);
    expect((await call("GET", "/v1/peer/earnings", { key: supplier.apiKey })).status).toBe(200);
  });
});

describe("text Postgres cannot store", () => {
  it("a NUL in a device's name or type is a 400 naming the field on both register routes, not a 500", async () => {
    const supplier = await tenant({ kind: "supplier" });
    const json1 = await json<ErrorBody>(await register(supplier.apiKey, "box\u0000"), 400);
    expect(json1.error.message).toContain("name");
    const android = await call("POST", "/v1/peer/register", {
      key: supplier.apiKey,
      body: { name: "box", type: "a\u0000b" },
    });
    expect(android.status).toBe(400);
  });

  it("an account name with control characters is a 400", async () => {
    const op = await tenant({ kind: "operator" });
    const res = await call("POST", "/v1/admin/accounts", {
      key: op.apiKey,
      body: { name: "ac\u0000me", kind: "customer" },
    });
    expect(res.status).toBe(400);
  });
});

describe("self-service rotation", () => {
  it("a new secret with the same scopes; the old key keeps working through a 24 h grace period, then not", async () => {
    const t = await tenant({ kind: "reseller" });
    const rotated = await json<KeyInfo & { apiKey: string; replaces: KeyInfo }>(
      await call("POST", `/v1/account/api-keys/${t.apiKeyId}/rotate`, { key: t.apiKey }),
      200,
    );
    expect(rotated.apiKey).toMatch(/^psx_/);
    expect(rotated.apiKey).not.toBe(t.apiKey);
    expect(rotated.scopes).toEqual(["resell"]);
    expect(rotated.replaces).toMatchObject({
      keyId: t.apiKeyId,
      status: "rotating",
      rotatedTo: rotated.keyId,
    });
    const graceMs = Date.parse(rotated.replaces.expiresAt!) - Date.now();
    expect(graceMs).toBeGreaterThan(23.9 * 3600_000);
    expect(graceMs).toBeLessThanOrEqual(24 * 3600_000);

    const list = (key: string) => call("GET", "/v1/reseller/pool-keys", { key });
    expect((await list(rotated.apiKey)).status).toBe(200);
    expect((await list(t.apiKey)).status).toBe(200); // grace
    // A second rotation of the same key is refused: rotate the successor.
    expect((await call("POST", `/v1/account/api-keys/${t.apiKeyId}/rotate`, { key: t.apiKey })).status).toBe(
      409,
    );
    // Past the grace period the old secret is dead.
    await pool.query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [
      t.apiKeyId,
    ]);
    expect((await list(t.apiKey)).status).toBe(401);
    expect((await list(rotated.apiKey)).status).toBe(200);
  });

  it("a key cannot rotate a key with scopes it lacks (no supply -> resell escalation), nor another account's key", async () => {
    const op = await tenant({ kind: "operator" });
    const mixed = await provision(op, "customer", ["resell"]);
    const supplyKey = await json<KeyInfo & { apiKey: string }>(
      await call("POST", `/v1/admin/accounts/${mixed.accountId}/api-keys`, {
        key: op.apiKey,
        body: { scopes: ["supply"] },
      }),
      201,
    );
    const escalate = await json<ErrorBody>(
      await call("POST", `/v1/account/api-keys/${mixed.keyId}/rotate`, { key: supplyKey.apiKey }),
      403,
    );
    expect(escalate.error.code).toBe("E_SCOPE_REQUIRED");
    expect(escalate.error.details).toEqual({ requiredScope: "resell" });
    const other = await tenant({ kind: "reseller" });
    expect(
      (await call("POST", `/v1/account/api-keys/${mixed.keyId}/rotate`, { key: other.apiKey })).status,
    ).toBe(404);
    expect((await call("POST", `/v1/account/api-keys/${mixed.keyId}/rotate`, {})).status).toBe(401);
  });
});

describe("no free traffic: resell limits", () => {
  it("pool-key caps draw from the account's lifetime allowance: create and topup past it are 403 E_RESELL_LIMIT, deleting keys gives nothing back", async () => {
    const op = await tenant({ kind: "operator" });
    const r = await provision(op, "reseller", ["resell"], { resellAllowanceBytes: 1000 });
    const create = (capBytes: number) =>
      call("POST", "/v1/reseller/pool-keys", { key: r.apiKey, body: { capBytes } });
    const first = await json<{ id: string }>(await create(600), 201);
    const over = await json<ErrorBody>(await create(401), 403);
    expect(over.error.code).toBe("E_RESELL_LIMIT");
    expect(over.error.details).toMatchObject({ limit: "allowanceBytes", remainingBytes: "400" });
    const topup = await json<ErrorBody>(
      await call("POST", `/v1/reseller/pool-keys/${first.id}/topup`, {
        key: r.apiKey,
        body: { addBytes: 401 },
      }),
      403,
    );
    expect(topup.error.code).toBe("E_RESELL_LIMIT");
    expect((await call("DELETE", `/v1/reseller/pool-keys/${first.id}`, { key: r.apiKey })).status).toBe(200);
    expect((await create(401)).status).toBe(403);
    expect((await create(400)).status).toBe(201);
  });

  it("concurrent mints cannot overdraw the allowance", async () => {
    const op = await tenant({ kind: "operator" });
    const r = await provision(op, "reseller", ["resell"], { resellAllowanceBytes: 1000 });
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        call("POST", "/v1/reseller/pool-keys", { key: r.apiKey, body: { capBytes: 300 } }),
      ),
    );
    expect(results.filter((x) => x.status === 201)).toHaveLength(3);
    expect(results.filter((x) => x.status === 403)).toHaveLength(5);
  });

  it("maxConnections above the account's per-key ceiling is 403 on create and on PATCH; unset defaults to the ceiling", async () => {
    const op = await tenant({ kind: "operator" });
    const r = await provision(op, "reseller", ["resell"], { resellMaxConnections: 5 });
    const over = await json<ErrorBody>(
      await call("POST", "/v1/reseller/pool-keys", {
        key: r.apiKey,
        body: { capBytes: 10, maxConnections: 6 },
      }),
      403,
    );
    expect(over.error).toMatchObject({ code: "E_RESELL_LIMIT", details: { limit: "maxConnections" } });
    const key = await json<{ id: string; maxConnections: number }>(
      await call("POST", "/v1/reseller/pool-keys", { key: r.apiKey, body: { capBytes: 10 } }),
      201,
    );
    expect(key.maxConnections).toBe(5);
    const patch = await call("PATCH", `/v1/reseller/pool-keys/${key.id}`, {
      key: r.apiKey,
      body: { maxConnections: 10_000 },
    });
    expect(patch.status).toBe(403);
  });
});

describe("revocation that bites", () => {
  it("re-registering a device kills its older refresh tokens (they no longer mint JWTs at the new generation)", async () => {
    const s = await tenant({ kind: "supplier" });
    const first = await json<{ deviceId: string; refreshToken: string }>(
      await register(s.apiKey, "box"),
      200,
    );
    const second = await json<{ deviceId: string; refreshToken: string }>(
      await register(s.apiKey, "box"),
      200,
    );
    expect(second.deviceId).toBe(first.deviceId);
    for (const path of [
      `/v1/peer/token/${first.deviceId}/refresh`,
      `/v1/peer/agents/${first.deviceId}/refresh`,
    ]) {
      const old = await call("POST", path, { body: { refreshToken: first.refreshToken } });
      expect(old.status, path).toBe(401);
    }
    expect(
      (
        await call("POST", `/v1/peer/token/${first.deviceId}/refresh`, {
          body: { refreshToken: second.refreshToken },
        })
      ).status,
    ).toBe(200);
  });

  it("revoking the API key kills the refresh tokens of the devices it registered and raises their generation in Redis", async () => {
    const op = await tenant({ kind: "operator" });
    const s = await provision(op, "supplier", ["supply"]);
    const dev = await json<{ deviceId: string; refreshToken: string }>(await register(s.apiKey, "box"), 200);
    const genBefore = Number(await redis.get(keys.deviceGen(dev.deviceId)));
    const revoked = await json<{ devicesRevoked: number }>(
      await call("DELETE", `/v1/admin/api-keys/${s.keyId}`, { key: op.apiKey }),
      200,
    );
    expect(revoked.devicesRevoked).toBe(1);
    expect(Number(await redis.get(keys.deviceGen(dev.deviceId)))).toBe(genBefore + 1);
    const refresh = await call("POST", `/v1/peer/agents/${dev.deviceId}/refresh`, {
      body: { refreshToken: dev.refreshToken },
    });
    expect(refresh.status).toBe(401);
    expect((await register(s.apiKey, "box")).status).toBe(401);
  });

  it("a rotated key's devices refresh during the grace period and not after it", async () => {
    const s = await tenant({ kind: "supplier" });
    const dev = await json<{ deviceId: string; refreshToken: string }>(await register(s.apiKey, "box"), 200);
    await json(await call("POST", `/v1/account/api-keys/${s.apiKeyId}/rotate`, { key: s.apiKey }), 200);
    const refresh = () =>
      call("POST", `/v1/peer/token/${dev.deviceId}/refresh`, { body: { refreshToken: dev.refreshToken } });
    expect((await refresh()).status).toBe(200);
    await pool.query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [
      s.apiKeyId,
    ]);
    expect((await refresh()).status).toBe(401);
  });
});

describe("public /health", () => {
  it("does not echo raw Redis or Postgres errors (no addresses, users or driver text)", async () => {
    const app = createApp();
    const res = await app.fetch(
      new Request("http://api.test/health"),
      {
        ...e,
        UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9",
        DATABASE_URL: "postgres://secretuser:x@127.0.0.1:9/secretdb",
      } as never,
      { waitUntil() {}, passThroughOnException() {}, props: {} } as unknown as ExecutionContext,
    );
    expect(res.status).toBe(503);
    const text = await res.text();
    const body = JSON.parse(text) as { checks: Record<string, { ok: boolean; error?: string }> };
    // A closed port refuses or hangs depending on the runtime's socket layer: either word, no detail.
    expect(body.checks.redis!.ok).toBe(false);
    expect(["unreachable", "timeout"]).toContain(body.checks.redis!.error);
    expect(body.checks.postgres!.ok).toBe(false);
    expect(["unreachable", "timeout"]).toContain(body.checks.postgres!.error);
    // The measured latency is ours to show, and `"latencyMs":9` would read as the port.
    const shown = text.replace(/"latencyMs":\d+/g, "");
    for (const leak of ["127.0.0.1", "secretuser", "secretdb", ":9", "ECONNREFUSED", "fetch"]) {
      expect(shown).not.toContain(leak);
    }
  });
});
