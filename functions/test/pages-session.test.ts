// Sign-in, the session cookie and CSRF of the signed-in pages (/farmer, /admin) inside workerd,
// against this run's Postgres and Redis (ENVIRONMENT=test: cookies are Secure and __Host-). Each
// attack is a test: a forged or cross-site post, another session's CSRF token, an ops-agent
// approving, a revoked key's session, guessing keys faster than the per-IP limit.
import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool, withTransaction } from "../../shared/db/pool.ts";
import { sha256Hex } from "../../shared/ids.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { decideApproval } from "../src/services/approvals.ts";
import { accrualPostings, postTransaction, supplierBalance } from "../src/services/ledger.ts";
import { recordPayoutFailed } from "../src/services/payout-records.ts";
import { requestWithdrawal } from "../src/services/withdrawals.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
const tenants: Tenant[] = [];
afterAll(async () => {
  // Accounts with a wallet or ledger rows stay (the append-only ledger points at them): their keys
  // and sessions go, the account row's delete is refused.
  for (const t of tenants) await t.cleanup().catch(() => {});
  await pool.end();
});

const ORIGIN = "http://api.test";
const EVM_WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
// Every test signs in from its own address, so the per-IP limit of one never meets another's.
const newIp = () => `198.51.100.${Math.floor(Math.random() * 250) + 1}-${crypto.randomUUID().slice(0, 8)}`;

async function tenant(
  kind: "supplier" | "operator" | "ops" | "customer",
  scopes?: ("supply" | "resell" | "operate" | "ops-agent")[],
) {
  const t = await createTenant(pool, redis, { kind, ...(scopes ? { scopes } : {}) });
  tenants.push(t);
  return t;
}

function form(fields: Record<string, string>) {
  return new URLSearchParams(fields).toString();
}

async function signIn(apiKey: string, opts: { ip?: string; next?: string } = {}) {
  return SELF.fetch(`${ORIGIN}/sign-in`, {
    method: "POST",
    redirect: "manual",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      "cf-connecting-ip": opts.ip ?? newIp(),
      origin: ORIGIN,
      "sec-fetch-site": "same-origin",
    },
    body: form({ apiKey, next: opts.next ?? "" }),
  });
}

/** A signed-in browser: its cookie and the CSRF token its pages carry. */
async function session(apiKey: string, page: "/farmer" | "/admin") {
  const res = await signIn(apiKey);
  expect(res.status).toBe(303);
  const cookie = /^(__Host-pp_session=wss_[0-9a-f]{64});/.exec(res.headers.get("set-cookie") ?? "")?.[1];
  expect(cookie).toBeDefined();
  const html = await (await get(page, cookie!)).text();
  const csrf = /name="csrf" value="([0-9a-f]{64})"/.exec(html)?.[1];
  expect(csrf).toBeDefined();
  return { cookie: cookie!, csrf: csrf!, token: cookie!.split("=")[1]! };
}

const get = (path: string, cookie?: string) =>
  SELF.fetch(`${ORIGIN}${path}`, { redirect: "manual", headers: cookie ? { cookie } : {} });

const post = (
  path: string,
  cookie: string | undefined,
  fields: Record<string, string>,
  headers: Record<string, string> = { origin: ORIGIN, "sec-fetch-site": "same-origin" },
) =>
  SELF.fetch(`${ORIGIN}${path}`, {
    method: "POST",
    redirect: "manual",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      ...(cookie ? { cookie } : {}),
      ...headers,
    },
    body: form(fields),
  });

/** A supplier with `micro` accrued, a wallet out of cooling, and a pending withdrawal of 10 USDC. */
async function pendingWithdrawal() {
  const s = await tenant("supplier");
  await withTransaction(pool, (tx) =>
    postTransaction(tx, {
      kind: "accrual",
      ref: `pages-test:${s.accountId}`,
      postings: accrualPostings([{ accountId: s.accountId, amountMicro: 25_000_000n }]),
    }),
  );
  await pool.query(
    `INSERT INTO payout_wallets (account_id, network, address, payable_from, updated_at)
     VALUES ($1, 'base', $2, now() - interval '1 second', now())`,
    [s.accountId, EVM_WALLET],
  );
  const out = await requestWithdrawal(pool, {
    accountId: s.accountId,
    actor: s.apiKeyId,
    amountMicro: 10_000_000n,
    now: new Date(),
  });
  if (!out.ok) throw new Error(out.refusal.message);
  return { supplier: s, withdrawal: out.withdrawal };
}

const approvalStatus = async (id: string) =>
  (await pool.query<{ status: string }>("SELECT status FROM approvals WHERE id = $1", [id])).rows[0]?.status;

describe("sign-in", () => {
  it("a supply key is exchanged for an HttpOnly, Secure, SameSite=Strict __Host- cookie; only the token's hash is stored", async () => {
    const s = await tenant("supplier");
    const res = await signIn(s.apiKey);
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/farmer");
    const setCookie = res.headers.get("set-cookie") ?? "";
    const token = /^__Host-pp_session=(wss_[0-9a-f]{64});/.exec(setCookie)?.[1];
    expect(token).toBeDefined();
    const flags = setCookie.split(";").map((f) => f.trim().toLowerCase());
    expect(flags).toEqual(
      expect.arrayContaining(["httponly", "secure", "samesite=strict", "path=/", "max-age=43200"]),
    );
    expect(flags.some((f) => f.startsWith("domain="))).toBe(false);
    const { rows } = await pool.query<{ token_hash: string; api_key_id: string }>(
      "SELECT token_hash, api_key_id FROM web_sessions WHERE account_id = $1",
      [s.accountId],
    );
    expect(rows).toEqual([{ token_hash: await sha256Hex(token!), api_key_id: s.apiKeyId }]);
    // The key and the token are nowhere in the table.
    const dump = JSON.stringify(
      (await pool.query("SELECT * FROM web_sessions WHERE account_id = $1", [s.accountId])).rows,
    );
    expect(dump).not.toContain(token!);
    expect(dump).not.toContain(s.apiKey);
  });

  it("a wrong key gets a clear message, no cookie, and never the key back", async () => {
    const guess = `psx_${"a".repeat(40)}`;
    const res = await signIn(guess);
    expect(res.status).toBe(401);
    expect(res.headers.get("set-cookie")).toBeNull();
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
    const html = await res.text();
    expect(html).toContain('data-testid="sign-in-error"');
    expect(html).toMatch(/not accepted: it is unknown, revoked, or past its rotation/);
    expect(html).not.toContain(guess);
    expect(html).not.toMatch(/<script/i);
  });

  it("a key without supply, operate or ops-agent is told which scopes the pages use", async () => {
    const c = await tenant("customer", ["resell"]);
    const res = await signIn(c.apiKey);
    expect(res.status).toBe(403);
    const html = await res.text();
    expect(html).toContain("none of the scopes these pages use (supply, operate, ops-agent)");
    expect(html).not.toContain(c.apiKey);
  });

  it("sign-in attempts are limited per client IP: the 11th in a minute is 429 with Retry-After, even with a good key", async () => {
    const s = await tenant("supplier");
    const ip = newIp();
    for (let i = 0; i < 10; i++) expect((await signIn(`psx_wrong${i}guess0000`, { ip })).status).toBe(401);
    const limited = await signIn(s.apiKey, { ip });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(limited.headers.get("set-cookie")).toBeNull();
    expect(await limited.text()).toContain(
      "Too many sign-in attempts from your address (at most 10 a minute)",
    );
    // Another address is not limited by this one's attempts.
    expect((await signIn(s.apiKey)).status).toBe(303);
  });

  it("a sign-in posted from another site is refused before the key is even looked at", async () => {
    const s = await tenant("supplier");
    const res = await SELF.fetch(`${ORIGIN}/sign-in`, {
      method: "POST",
      redirect: "manual",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        origin: "https://evil.example",
        "sec-fetch-site": "cross-site",
      },
      body: form({ apiKey: s.apiKey }),
    });
    expect(res.status).toBe(403);
    expect(res.headers.get("set-cookie")).toBeNull();
  });

  it("signed-in pages redirect (303) to /sign-in without a session", async () => {
    for (const page of ["/farmer", "/admin"]) {
      const res = await get(page);
      expect(res.status).toBe(303);
      expect(res.headers.get("location")).toBe(`/sign-in?next=${page}`);
    }
    const forged = await get("/farmer", `__Host-pp_session=wss_${"0".repeat(64)}`);
    expect(forged.status).toBe(303);
  });
});

describe("sessions", () => {
  it("a revoked key's session stops working at once, as does a rotated key's past its grace period", async () => {
    const a = await tenant("supplier");
    const sa = await session(a.apiKey, "/farmer");
    expect((await get("/farmer", sa.cookie)).status).toBe(200);
    await pool.query("UPDATE api_keys SET revoked_at = now() WHERE id = $1", [a.apiKeyId]);
    expect((await get("/farmer", sa.cookie)).status).toBe(303);
    // ...and its forms are refused, CSRF token and all.
    expect(
      (await post("/farmer/wallet", sa.cookie, { csrf: sa.csrf, network: "base", address: EVM_WALLET }))
        .status,
    ).toBe(403);

    const b = await tenant("supplier");
    const sb = await session(b.apiKey, "/farmer");
    await pool.query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [
      b.apiKeyId,
    ]);
    expect((await get("/farmer", sb.cookie)).status).toBe(303);
  });

  it("sign-out deletes the session (the old cookie no longer works) and clears the cookie", async () => {
    const s = await tenant("supplier");
    const ss = await session(s.apiKey, "/farmer");
    const res = await post("/sign-out", ss.cookie, { csrf: ss.csrf });
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/sign-in");
    expect(res.headers.get("set-cookie")).toMatch(/^__Host-pp_session=;.*Max-Age=0/i);
    expect(
      (await pool.query("SELECT 1 FROM web_sessions WHERE token_hash = $1", [await sha256Hex(ss.token)]))
        .rowCount,
    ).toBe(0);
    expect((await get("/farmer", ss.cookie)).status).toBe(303);
  });

  it("a supply session is refused /admin (403 page), an ops-agent session is refused /farmer", async () => {
    const s = await tenant("supplier");
    const ss = await session(s.apiKey, "/farmer");
    const admin = await get("/admin", ss.cookie);
    expect(admin.status).toBe(403);
    expect(await admin.text()).toContain("operators&#39; console needs");
    const agent = await tenant("ops");
    const sa = await session(agent.apiKey, "/admin");
    expect((await get("/farmer", sa.cookie)).status).toBe(403);
  });
});

describe("CSRF", () => {
  it("a form post without the CSRF token, with a wrong one, or with another session's is a 403 page and changes nothing", async () => {
    const s = await tenant("supplier");
    const ss = await session(s.apiKey, "/farmer");
    const other = await session((await tenant("supplier")).apiKey, "/farmer");
    const fields = { network: "base", address: EVM_WALLET };
    const missing = await post("/farmer/wallet", ss.cookie, fields);
    expect(missing.status).toBe(403);
    expect(await missing.text()).toContain("the form carries no CSRF token");
    const wrong = await post("/farmer/wallet", ss.cookie, { ...fields, csrf: "f".repeat(64) });
    expect(wrong.status).toBe(403);
    expect(await wrong.text()).toContain("the form&#39;s CSRF token is not this session&#39;s");
    expect((await post("/farmer/wallet", ss.cookie, { ...fields, csrf: other.csrf })).status).toBe(403);
    expect((await post("/farmer/withdrawals", ss.cookie, { amount: "10" })).status).toBe(403);
    expect(
      (await pool.query("SELECT 1 FROM payout_wallets WHERE account_id = $1", [s.accountId])).rowCount,
    ).toBe(0);
    // The same form with the session's own token goes through: 303 back to the page.
    const ok = await post("/farmer/wallet", ss.cookie, { ...fields, csrf: ss.csrf });
    expect(ok.status).toBe(303);
    expect(ok.headers.get("location")).toBe("/farmer?done=wallet");
    expect(
      (await pool.query("SELECT address FROM payout_wallets WHERE account_id = $1", [s.accountId])).rows,
    ).toEqual([{ address: EVM_WALLET }]);
  });

  it("a post from another site is refused even with a valid token (Sec-Fetch-Site, Origin)", async () => {
    const s = await tenant("supplier");
    const ss = await session(s.apiKey, "/farmer");
    const fields = { csrf: ss.csrf, network: "base", address: EVM_WALLET };
    expect((await post("/farmer/wallet", ss.cookie, fields, { "sec-fetch-site": "cross-site" })).status).toBe(
      403,
    );
    expect((await post("/farmer/wallet", ss.cookie, fields, { "sec-fetch-site": "same-site" })).status).toBe(
      403,
    );
    expect((await post("/farmer/wallet", ss.cookie, fields, { origin: "https://evil.example" })).status).toBe(
      403,
    );
    expect(
      (await pool.query("SELECT 1 FROM payout_wallets WHERE account_id = $1", [s.accountId])).rowCount,
    ).toBe(0);
  });
});

describe("/farmer forms", () => {
  it("a bad wallet address or amount re-renders the page with what was wrong; the withdrawal refusals speak the page's terms", async () => {
    const s = await tenant("supplier");
    const ss = await session(s.apiKey, "/farmer");
    const lower = EVM_WALLET.toLowerCase();
    const bad = await post("/farmer/wallet", ss.cookie, { csrf: ss.csrf, network: "base", address: lower });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain(`must be the EIP-55 checksummed spelling (${EVM_WALLET})`);
    const amount = await post("/farmer/withdrawals", ss.cookie, { csrf: ss.csrf, amount: "1e3" });
    expect(amount.status).toBe(400);
    expect(await amount.text()).toContain("a USDC amount like 10 or 12.5");
    const noWallet = await post("/farmer/withdrawals", ss.cookie, { csrf: ss.csrf, amount: "10" });
    expect(noWallet.status).toBe(409);
    expect(await noWallet.text()).toContain("Set a payout wallet first");
    expect(
      (await post("/farmer/wallet", ss.cookie, { csrf: ss.csrf, network: "base", address: EVM_WALLET }))
        .status,
    ).toBe(303);
    const cooling = await post("/farmer/withdrawals", ss.cookie, { csrf: ss.csrf, amount: "10" });
    expect(cooling.status).toBe(409);
    expect(await cooling.text()).toMatch(
      /Your wallet is in its cooling period until \d{4}-\d\d-\d\d \d\d:\d\d UTC/,
    );
  });
});

describe("/admin", () => {
  it("an ops-agent sees the queue without decision buttons; its forged approve (valid CSRF) is 403, changes nothing and is audited", async () => {
    const { withdrawal } = await pendingWithdrawal();
    const agent = await tenant("ops");
    const sa = await session(agent.apiKey, "/admin");
    const html = await (await get("/admin", sa.cookie)).text();
    expect(html).toContain(`data-approval="${withdrawal.approvalId}"`);
    expect(html).not.toContain('data-testid="approve"');
    expect(html).not.toContain('data-testid="reject"');
    expect(html).not.toContain("/approve");
    for (const decision of ["approve", "reject"]) {
      const forged = await post(`/admin/approvals/${withdrawal.approvalId}/${decision}`, sa.cookie, {
        csrf: sa.csrf,
        reason: "forged",
      });
      expect(forged.status).toBe(403);
      expect(await forged.text()).toContain("Only a human operator");
    }
    expect(await approvalStatus(withdrawal.approvalId!)).toBe("pending");
    const { rows } = await pool.query<{ action: string; subject: string }>(
      "SELECT action, subject FROM audit_log WHERE actor = $1 ORDER BY chain_seq",
      [agent.apiKeyId],
    );
    expect(rows).toEqual([
      { action: "approval.approve_refused", subject: withdrawal.approvalId },
      { action: "approval.reject_refused", subject: withdrawal.approvalId },
    ]);
  });

  it("an ops-agent may not release the kill switch through the page (403, audited); a human sees the decision buttons", async () => {
    const agent = await tenant("ops");
    const sa = await session(agent.apiKey, "/admin");
    const res = await post("/admin/kill-switch", sa.cookie, { csrf: sa.csrf, engaged: "false" });
    expect(res.status).toBe(403);
    const { rows } = await pool.query<{ action: string }>("SELECT action FROM audit_log WHERE actor = $1", [
      agent.apiKeyId,
    ]);
    expect(rows.map((r) => r.action)).toEqual(["kill_switch.release_refused"]);
  });

  it("a human operator approves from the page through the approvals service: 303, the approval and withdrawal are approved", async () => {
    const { withdrawal } = await pendingWithdrawal();
    const human = await tenant("operator");
    const sh = await session(human.apiKey, "/admin");
    const html = await (await get("/admin", sh.cookie)).text();
    expect(html).toContain(`action="/admin/approvals/${withdrawal.approvalId}/approve"`);
    const noReason = await post(`/admin/approvals/${withdrawal.approvalId}/reject`, sh.cookie, {
      csrf: sh.csrf,
    });
    expect(noReason.status).toBe(400);
    const res = await post(`/admin/approvals/${withdrawal.approvalId}/approve`, sh.cookie, { csrf: sh.csrf });
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/admin?done=approved");
    expect(await approvalStatus(withdrawal.approvalId!)).toBe("approved");
    const w = await pool.query<{ status: string }>("SELECT status FROM withdrawals WHERE id = $1", [
      withdrawal.id,
    ]);
    expect(w.rows[0]?.status).toBe("approved");
    const audit = await pool.query<{ actor: string }>(
      "SELECT actor FROM audit_log WHERE action = 'approval.approve' AND subject = $1",
      [withdrawal.approvalId],
    );
    expect(audit.rows).toEqual([{ actor: human.apiKeyId }]);
    // Twice is a conflict, said on the page.
    const again = await post(`/admin/approvals/${withdrawal.approvalId}/approve`, sh.cookie, {
      csrf: sh.csrf,
    });
    expect(again.status).toBe(409);
    expect(await again.text()).toContain("was already approved");
  });

  it("a payout that failed on chain is listed; an ops-agent's return is 403 and audited; a human's returns it once", async () => {
    const { supplier, withdrawal } = await pendingWithdrawal();
    await decideApproval(pool, {
      id: withdrawal.approvalId!,
      decision: "approve",
      actor: "test",
      now: new Date(),
    });
    await recordPayoutFailed(
      pool,
      {
        withdrawal_id: withdrawal.id,
        account_id: supplier.accountId,
        amount_micro: "10000000",
        tx_hash: null,
      },
      "reverted",
      {},
    );
    const agent = await tenant("ops");
    const sa = await session(agent.apiKey, "/admin");
    const seen = await (await get("/admin", sa.cookie)).text();
    expect(seen).toContain(`data-withdrawal="${withdrawal.id}"`);
    expect(seen).not.toContain(`action="/admin/withdrawals/${withdrawal.id}/return"`);
    const forged = await post(`/admin/withdrawals/${withdrawal.id}/return`, sa.cookie, {
      csrf: sa.csrf,
      reason: "agent says so",
    });
    expect(forged.status).toBe(403);
    const refused = await pool.query<{ action: string }>(
      "SELECT action FROM audit_log WHERE actor = $1 AND subject = $2",
      [agent.apiKeyId, withdrawal.id],
    );
    expect(refused.rows.map((r) => r.action)).toEqual(["withdrawal.return_refused"]);

    const human = await tenant("operator");
    const sh = await session(human.apiKey, "/admin");
    expect(await (await get("/admin", sh.cookie)).text()).toContain(
      `action="/admin/withdrawals/${withdrawal.id}/return"`,
    );
    expect(
      (await post(`/admin/withdrawals/${withdrawal.id}/return`, sh.cookie, { csrf: sh.csrf })).status,
    ).toBe(400);
    const res = await post(`/admin/withdrawals/${withdrawal.id}/return`, sh.cookie, {
      csrf: sh.csrf,
      reason: "treasury out of gas; supplier may withdraw again",
    });
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/admin?done=returned");
    expect((await supplierBalance(pool, supplier.accountId)).availableMicro).toBe(25_000_000n);
    const again = await post(`/admin/withdrawals/${withdrawal.id}/return`, sh.cookie, {
      csrf: sh.csrf,
      reason: "twice",
    });
    expect(again.status).toBe(409);
    expect(await again.text()).toContain("is returned");
    expect(await (await get("/admin", sh.cookie)).text()).not.toContain(`data-withdrawal="${withdrawal.id}"`);
  });
});
