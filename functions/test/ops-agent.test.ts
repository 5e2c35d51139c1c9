import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { heartbeatJob } from "../src/jobs/heartbeat.ts";
import { runScheduled } from "../src/scheduled.ts";
import { reconcileListings } from "../src/services/listing.ts";
import { advancePayout } from "../src/services/payouts.ts";
import { forgetDevice, markOnline } from "./helpers/presence.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

// The ops agent's reach (issue 10, ADR 0018) inside workerd against this run's Postgres and Redis:
// reversible actions capped per key and audited, pauses every loop honours, the kill-switch rule,
// and proposals only a human's approval executes, exactly once.
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
const tenants: Tenant[] = [];
const devices: string[] = [];
afterAll(async () => {
  for (const id of devices) {
    await forgetDevice(redis, id);
    await redis.eval("return redis.call('HDEL', KEYS[1], ARGV[1])", [keys.opsDelisted()], [id]);
    await redis.eval("return redis.call('ZREM', KEYS[1], ARGV[1])", [keys.probeDue()], [id]);
  }
  // An operator that registered modem exits stays (modem_exits.created_by points at it).
  for (const t of tenants) await t.cleanup().catch(() => {});
  await pool.end();
});

const api = (method: string, path: string, apiKey: string | undefined, body?: unknown) =>
  SELF.fetch(`http://api.test${path}`, {
    method,
    headers: {
      ...(apiKey ? { "X-API-Key": apiKey } : {}),
      ...(body ? { "content-type": "application/json" } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
// biome-ignore lint/suspicious/noExplicitAny: test assertions walk response JSON
const json = async (res: Response) => (await res.json()) as Record<string, any>;

async function tenant(kind: "ops" | "operator" | "supplier" | "farmer") {
  const t = await createTenant(pool, redis, { kind });
  tenants.push(t);
  return t;
}

/** A registered device, online and verified: the listing rule lists it. */
async function listableDevice(owner: Tenant) {
  const id = `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  devices.push(id);
  await pool.query(
    "INSERT INTO devices (id, account_id, name, ip_type) VALUES ($1, $2, 'ops', 'residential')",
    [id, owner.accountId],
  );
  await markOnline(redis, id, `o${String.fromCharCode(97 + Math.floor(Math.random() * 26))}`);
  await redis.hset(keys.probe(id), { verified: "1", speedTier: "fast", passStreak: "2", failStreak: "0" });
  return id;
}
const isListed = async (id: string) =>
  Number(await redis.eval("return redis.call('SISMEMBER', KEYS[1], ARGV[1])", [keys.poolListed()], [id])) ===
  1;

async function withSetting<T>(key: string, value: unknown, fn: () => Promise<T>): Promise<T> {
  const { rows } = await pool.query<{ value: unknown }>("SELECT value FROM settings WHERE key = $1", [key]);
  await pool.query("UPDATE settings SET value = $2 WHERE key = $1", [key, JSON.stringify(value)]);
  try {
    return await fn();
  } finally {
    await pool.query("UPDATE settings SET value = $2 WHERE key = $1", [key, JSON.stringify(rows[0]!.value)]);
  }
}

describe("reversible ops-agent actions", () => {
  it("delist holds a device off sale through the listing cron until relist; re-probe makes its probe due; each audited", async () => {
    const agent = await tenant("ops");
    const supplier = await tenant("supplier");
    const id = await listableDevice(supplier);
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    expect(await isListed(id)).toBe(true);

    expect((await api("POST", `/v1/admin/devices/${id}/delist`, supplier.apiKey, {})).status).toBe(403);
    expect((await api("POST", "/v1/admin/devices/agent_nosuchdevice/delist", agent.apiKey, {})).status).toBe(
      404,
    );
    const off = await api("POST", `/v1/admin/devices/${id}/delist`, agent.apiKey, { reason: "flapping" });
    expect(off.status).toBe(200);
    expect(await json(off)).toEqual({ id, delisted: true });
    expect(await isListed(id)).toBe(false);
    // The cron would list it (verified, online, fast) but the operations delist holds.
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    expect(await isListed(id)).toBe(false);

    const before = Date.now();
    const probe = await api("POST", `/v1/admin/devices/${id}/reprobe`, agent.apiKey);
    expect(probe.status).toBe(200);
    const due = Number(
      await redis.eval("return redis.call('ZSCORE', KEYS[1], ARGV[1])", [keys.probeDue()], [id]),
    );
    expect(due).toBeGreaterThanOrEqual(before - 1000);
    expect(due).toBeLessThanOrEqual(Date.now() + 1000);

    expect((await api("POST", `/v1/admin/devices/${id}/relist`, agent.apiKey)).status).toBe(200);
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    expect(await isListed(id)).toBe(true);
    const { rows } = await pool.query<{ action: string; actor: string }>(
      "SELECT action, actor FROM audit_log WHERE subject = $1 AND action LIKE 'device.%' ORDER BY chain_seq NULLS LAST, id",
      [id],
    );
    expect(rows).toEqual([
      { action: "device.delist", actor: agent.apiKeyId },
      { action: "device.reprobe", actor: agent.apiKeyId },
      { action: "device.relist", actor: agent.apiKeyId },
    ]);
  });

  it("an ops-agent key is capped per hour per action: 429 naming the cap and when it resets; a human is not", async () => {
    const agent = await tenant("ops");
    const other = await tenant("ops");
    const human = await tenant("operator");
    const id = await listableDevice(await tenant("supplier"));
    await withSetting("ops_agent_caps_per_hour", { reprobe: 2 }, async () => {
      for (let i = 0; i < 2; i++)
        expect((await api("POST", `/v1/admin/devices/${id}/reprobe`, agent.apiKey)).status).toBe(200);
      const over = await api("POST", `/v1/admin/devices/${id}/reprobe`, agent.apiKey);
      expect(over.status).toBe(429);
      const retryAfter = Number(over.headers.get("Retry-After"));
      expect(retryAfter).toBeGreaterThan(3500);
      const body = await json(over);
      expect(body.error).toMatchObject({ code: "E_RATE_LIMITED", details: { action: "reprobe", cap: 2 } });
      expect(body.error.message).toMatch(/at most 2 times per hour .* resets at \d{4}-/);
      expect(Date.parse(body.error.details.resetsAt)).toBeGreaterThan(Date.now() + 3_500_000);
      // Per key: another ops-agent key has its own budget; a human operator has none.
      expect((await api("POST", `/v1/admin/devices/${id}/reprobe`, other.apiKey)).status).toBe(200);
      for (let i = 0; i < 3; i++)
        expect((await api("POST", `/v1/admin/devices/${id}/reprobe`, human.apiKey)).status).toBe(200);
    });
  });

  it("a paused loop records skipped: paused (the crons and the payout executor) until resumed", async () => {
    // The routes pause the watchdog (no worker test runs it); the guard is shown on a job of this
    // test's own, so no other file's cron is stopped meanwhile.
    const agent = await tenant("ops");
    const paused = await api("POST", "/v1/admin/loops/watchdog/pause", agent.apiKey, { reason: "test" });
    try {
      expect(paused.status).toBe(200);
      expect(await json(paused)).toMatchObject({ name: "watchdog", paused: true });
      expect(await redis.get(keys.loopPaused("watchdog"))).toMatch(
        new RegExp(`^paused by ${agent.apiKeyId} at `),
      );
      const loops = await json(await api("GET", "/v1/admin/loops", agent.apiKey));
      expect(loops.loops).toContainEqual(expect.objectContaining({ name: "watchdog", paused: true }));
      expect(loops.loops.map((l: { name: string }) => l.name)).toEqual(
        expect.arrayContaining(["payouts", "supplier-earnings", "heartbeat", "prober", "watchdog"]),
      );
      expect((await api("POST", "/v1/admin/loops/nosuchloop/pause", agent.apiKey, {})).status).toBe(400);
    } finally {
      expect((await api("POST", "/v1/admin/loops/watchdog/resume", agent.apiKey)).status).toBe(200);
    }
    expect(await redis.get(keys.loopPaused("watchdog"))).toBeNull();

    const job = { ...heartbeatJob, name: `t_pause_${crypto.randomUUID().slice(0, 8)}` };
    await redis.set(keys.loopPaused(job.name), "test");
    try {
      const [out] = await runScheduled(e, [job]);
      expect(out).toEqual({ job: job.name, status: "skipped", detail: { reason: "paused" } });
    } finally {
      await redis.del(keys.loopPaused(job.name));
    }
    const [again] = await runScheduled(e, [job]);
    expect(again!.status).toBe("ok");

    // The payout executor honours its own pause wherever it runs (cron or right after an approval).
    await redis.set(keys.loopPaused("payouts"), "test");
    try {
      expect(await advancePayout({ db: pool, redis }, null, "wd_nosuchwithdrawal")).toEqual({
        withdrawalId: "wd_nosuchwithdrawal",
        status: "skipped",
        reason: "paused",
      });
    } finally {
      await redis.del(keys.loopPaused("payouts"));
    }
    const { rows } = await pool.query<{ action: string }>(
      "SELECT action FROM audit_log WHERE actor = $1 AND subject = 'watchdog' ORDER BY id",
      [agent.apiKeyId],
    );
    expect(rows.map((r) => r.action)).toEqual(["loop.pause", "loop.resume"]);
  });

  it("with the kill switch engaged an ops-agent may delist and pause, not relist, re-probe or resume; a human may", async () => {
    const agent = await tenant("ops");
    const human = await tenant("operator");
    const id = await listableDevice(await tenant("supplier"));
    expect(
      (await api("POST", "/v1/admin/kill-switch", agent.apiKey, { engaged: true, reason: "test" })).status,
    ).toBe(200);
    try {
      expect((await api("POST", `/v1/admin/devices/${id}/delist`, agent.apiKey, {})).status).toBe(200);
      expect((await api("POST", "/v1/admin/loops/watchdog/pause", agent.apiKey, {})).status).toBe(200);
      for (const [path, body] of [
        [`/v1/admin/devices/${id}/relist`, undefined],
        [`/v1/admin/devices/${id}/reprobe`, undefined],
        ["/v1/admin/loops/watchdog/resume", undefined],
      ] as const) {
        const res = await api("POST", path, agent.apiKey, body);
        expect(res.status, path).toBe(409);
        expect((await json(res)).error.message).toMatch(/kill switch is engaged/);
      }
      expect((await api("POST", "/v1/admin/loops/watchdog/resume", human.apiKey)).status).toBe(200);
      expect((await api("POST", `/v1/admin/devices/${id}/relist`, human.apiKey)).status).toBe(200);
    } finally {
      expect((await api("POST", "/v1/admin/kill-switch", human.apiKey, { engaged: false })).status).toBe(200);
    }
  });
});

describe("proposals", () => {
  it("an ops-agent's bulk revocation waits for a human; concurrent approvals execute it exactly once", async () => {
    const agent = await tenant("ops");
    const human = await tenant("operator");
    const victims = [await tenant("supplier"), await tenant("supplier")];
    const keyIds = victims.map((v) => v.apiKeyId);
    const filed = await api("POST", "/v1/admin/proposals", agent.apiKey, { action: "revoke_keys", keyIds });
    expect(filed.status).toBe(202);
    const { approvalId } = await json(filed);
    expect(approvalId).toMatch(/^apr_[0-9a-f]{24}$/);
    // Nothing happened yet: the keys still work.
    expect((await api("GET", "/v1/peer/earnings", victims[0]!.apiKey)).status).toBe(200);

    // The agent cannot approve, directly or by proposing again (that only files another approval).
    expect((await api("POST", `/v1/admin/approvals/${approvalId}/approve`, agent.apiKey)).status).toBe(403);
    const again = await api("POST", "/v1/admin/proposals", agent.apiKey, { action: "revoke_keys", keyIds });
    expect(again.status).toBe(202);
    const dup = (await json(again)).approvalId;
    expect(dup).not.toBe(approvalId);
    expect((await api("GET", "/v1/peer/earnings", victims[0]!.apiKey)).status).toBe(200);

    const decisions = await Promise.all(
      Array.from({ length: 5 }, () => api("POST", `/v1/admin/approvals/${approvalId}/approve`, human.apiKey)),
    );
    const statuses = decisions.map((d) => d.status).sort();
    expect(statuses).toEqual([200, 409, 409, 409, 409]);
    const ok = await json(decisions.find((d) => d.status === 200)!);
    expect(ok.approval).toMatchObject({ kind: "proposal", status: "approved", result: { revoked: keyIds } });
    for (const v of victims) expect((await api("GET", "/v1/peer/earnings", v.apiKey)).status).toBe(401);
    const { rows } = await pool.query<{ subject: string }>(
      "SELECT subject FROM audit_log WHERE action = 'api_key.revoke' AND subject = ANY($1)",
      [keyIds],
    );
    expect(rows.map((r) => r.subject).sort()).toEqual([...keyIds].sort());

    // Rejecting the duplicate does nothing.
    const rejected = await api("POST", `/v1/admin/approvals/${dup}/reject`, human.apiKey, {
      reason: "duplicate",
    });
    expect(rejected.status).toBe(200);
    expect((await json(rejected)).approval).toMatchObject({ status: "rejected", result: null });
  });

  it("a scope change proposed by the agent and rejected changes nothing; a human's own request acts at once", async () => {
    const agent = await tenant("ops");
    const human = await tenant("operator");
    const target = await tenant("supplier");
    const filed = await json(
      await api("POST", "/v1/admin/proposals", agent.apiKey, {
        action: "change_scopes",
        keyId: target.apiKeyId,
        scopes: ["supply", "resell"],
      }),
    );
    await api("POST", `/v1/admin/approvals/${filed.approvalId}/reject`, human.apiKey, { reason: "no" });
    const scopes = async () =>
      (await pool.query<{ scopes: string[] }>("SELECT scopes FROM api_keys WHERE id = $1", [target.apiKeyId]))
        .rows[0]!.scopes;
    expect(await scopes()).toEqual(["supply"]);
    const direct = await api("POST", "/v1/admin/proposals", human.apiKey, {
      action: "change_scopes",
      keyId: target.apiKeyId,
      scopes: ["supply", "resell"],
    });
    expect(direct.status).toBe(200);
    expect(await json(direct)).toMatchObject({
      executed: true,
      result: { changed: true, before: ["supply"] },
    });
    expect(await scopes()).toEqual(["supply", "resell"]);
    const { rows } = await pool.query(
      "SELECT actor FROM audit_log WHERE action = 'api_key.scopes' AND subject = $1",
      [target.apiKeyId],
    );
    expect(rows).toEqual([{ actor: human.apiKeyId }]);
  });

  it("deletions over settings.mass_deletion_threshold wait for a human; at or under it the agent deletes (capped)", async () => {
    const agent = await tenant("ops");
    const human = await tenant("operator");
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await json(
        await api("POST", "/v1/admin/modem-exits", human.apiKey, {
          host: "127.0.0.1",
          port: 20_000 + Math.floor(Math.random() * 40_000),
          country: "zz",
        }),
      );
      ids.push(r.id);
    }
    const big = await api("POST", "/v1/admin/proposals", agent.apiKey, {
      action: "delete_modem_exits",
      ids: ids.slice(0, 4),
    });
    expect(big.status).toBe(202);
    const small = await api("POST", "/v1/admin/proposals", agent.apiKey, {
      action: "delete_modem_exits",
      ids: ids.slice(4),
    });
    expect(small.status).toBe(200);
    expect(await json(small)).toMatchObject({ executed: true, result: { deleted: [ids[4]] } });
    const live = async () =>
      (await pool.query("SELECT id FROM modem_exits WHERE id = ANY($1) AND deleted_at IS NULL", [ids])).rows
        .length;
    expect(await live()).toBe(4);
    const ok = await api("POST", `/v1/admin/approvals/${(await json(big)).approvalId}/approve`, human.apiKey);
    expect(ok.status).toBe(200);
    expect(await live()).toBe(0);
    // Off sale too.
    for (const id of ids)
      expect(Number(await redis.eval("return redis.call('EXISTS', KEYS[1])", [keys.endpoint(id)], []))).toBe(
        0,
      );
  });

  it("relay configuration (a device's region) and settings go through the same gate", async () => {
    const agent = await tenant("ops");
    const human = await tenant("operator");
    const deviceId = `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    const filed = await api("POST", "/v1/admin/proposals", agent.apiKey, {
      action: "set_device_region",
      deviceId,
      region: "eu",
    });
    expect(filed.status).toBe(202);
    const region = () =>
      redis.eval("return redis.call('HGET', KEYS[1], ARGV[1])", [keys.deviceRegionOverride()], [deviceId]);
    expect(await region()).toBeNull();
    expect(
      (await api("POST", `/v1/admin/approvals/${(await json(filed)).approvalId}/approve`, human.apiKey))
        .status,
    ).toBe(200);
    expect(await region()).toBe("eu");
    const cleared = await api("POST", "/v1/admin/proposals", human.apiKey, {
      action: "set_device_region",
      deviceId,
      region: null,
    });
    expect(cleared.status).toBe(200);
    expect(await region()).toBeNull();

    const setting = await api("POST", "/v1/admin/proposals", agent.apiKey, {
      action: "set_ops_agent_caps",
      value: { delist: 1000 },
    });
    expect(setting.status).toBe(202);
    const no = await api(
      "POST",
      `/v1/admin/approvals/${(await json(setting)).approvalId}/reject`,
      human.apiKey,
      {
        reason: "test",
      },
    );
    expect(no.status).toBe(200);
    // Money and auth settings are not configuration a proposal can write.
    const bad = await api("POST", "/v1/admin/proposals", agent.apiKey, {
      action: "set_setting",
      key: "earnings_per_gb",
      value: { mobile: 100 },
    });
    expect(bad.status).toBe(400);
  });
});
