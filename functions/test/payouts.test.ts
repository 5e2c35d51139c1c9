import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool, withTransaction } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { runScript } from "../../shared/lua/script.ts";
import { deviceBytesFlush } from "../../shared/lua/scripts.gen.ts";
import { BYTES_PER_GB } from "../../shared/money.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { payoutsJob } from "../src/jobs/payouts.ts";
import { runScheduled } from "../src/scheduled.ts";
import { settleEarnings } from "../src/services/earnings.ts";
import { postTransaction, supplierBalance, unbalancedTransactions } from "../src/services/ledger.ts";
import { recordPayoutFailed } from "../src/services/payout-records.ts";
import { createTenant, type Tenant } from "./helpers/tenant.ts";

// Wallets, withdrawals, the approval gate, the ledger and the kill switch inside workerd against
// this run's Postgres and Redis. Ledger rows are append-only, so the accounts made here stay.
const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
afterAll(() => pool.end());

const EVM_WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const SOLANA_WALLET = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";

const api = (method: string, path: string, apiKey: string | undefined, body?: unknown) =>
  SELF.fetch(`http://api.test${path}`, {
    method,
    headers: {
      ...(apiKey ? { "X-API-Key": apiKey } : {}),
      ...(body ? { "content-type": "application/json" } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });

/** A supplier with one device (`sdk`: registered by our SDK) and `earnedMicro` accrued through the real cron path. */
async function supplier(opts: { earnedMicro?: bigint; sdk?: boolean } = {}) {
  const t = await createTenant(pool, redis, { kind: "supplier" });
  const deviceId = `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  await pool.query(
    "INSERT INTO devices (id, account_id, name, ip_type, sdk_version) VALUES ($1, $2, 'box', 'mobile', $3)",
    [deviceId, t.accountId, opts.sdk ? "0.4.0" : null],
  );
  const s = { ...t, deviceId };
  if (opts.earnedMicro) await earn(s, opts.earnedMicro);
  return s;
}

/** Serves bytes worth `micro` at the mobile rate (0.5 USDC/GB) and settles them. */
async function earn(s: { deviceId: string }, micro: bigint) {
  const bytes = (micro * BYTES_PER_GB) / 500_000n;
  await runScript(
    redis,
    deviceBytesFlush,
    [keys.deviceBytes(s.deviceId), keys.servedDevices(), keys.unsettledDevices()],
    [String(bytes), "0", s.deviceId, String(Date.now())],
  );
  await settleEarnings({ redis, db: pool }, 10_000);
}

/** Registers the wallet and ends its cooling period (as if seven days had passed). */
async function walletOutOfCooling(t: Tenant, address = EVM_WALLET) {
  const res = await api("PUT", "/v1/peer/wallet", t.apiKey, { network: "base", address });
  expect(res.status).toBe(200);
  await pool.query(
    "UPDATE payout_wallets SET payable_from = now() - interval '1 second' WHERE account_id = $1",
    [t.accountId],
  );
}

async function errorOf(res: Response) {
  return (
    (await res.json()) as { error: { code: string; message: string; details?: Record<string, unknown> } }
  ).error;
}

describe("the double-entry ledger", () => {
  it("accrual writes balanced postings and the balance is their sum", async () => {
    const s = await supplier({ earnedMicro: 7_000_000n });
    expect((await supplierBalance(pool, s.accountId)).availableMicro).toBe(7_000_000n);
    const { rows } = await pool.query<{ book: string; amount: string }>(
      "SELECT book, sum(amount_micro)::text AS amount FROM ledger_postings WHERE account_id = $1 GROUP BY book ORDER BY book",
      [s.accountId],
    );
    expect(rows).toEqual([
      { book: "supplier_earnings", amount: "7000000" },
      { book: "supplier_payable", amount: "-7000000" },
    ]);
  });

  it("the database refuses to commit a transaction whose postings do not sum to zero", async () => {
    const s = await supplier();
    const write = withTransaction(pool, async (tx) => {
      const id = `ltx_bad_${crypto.randomUUID()}`;
      await tx.query("INSERT INTO ledger_txns (id, kind) VALUES ($1, 'accrual')", [id]);
      await tx.query(
        "INSERT INTO ledger_postings (txn_id, book, account_id, amount_micro) VALUES ($1, 'supplier_payable', $2, -5)",
        [id, s.accountId],
      );
    });
    await expect(write).rejects.toThrow(/does not balance/);
    await expect(
      withTransaction(pool, (tx) =>
        postTransaction(tx, {
          kind: "accrual",
          ref: null,
          postings: [{ book: "supplier_payable", accountId: s.accountId, amountMicro: 1n }],
        }),
      ),
    ).rejects.toThrow(/does not balance/);
    expect((await supplierBalance(pool, s.accountId)).availableMicro).toBe(0n);
  });

  it("concurrent accruals, withdrawals and approvals keep the books balanced and never overdraw", async () => {
    const s = await supplier({ earnedMicro: 30_000_000n });
    await walletOutOfCooling(s);
    const operator = await createTenant(pool, redis, { kind: "operator" });
    // 8 withdrawals of 6 USDC race against 3 more accruals: at most what was accrued is withdrawn.
    const withdrawals = Array.from({ length: 8 }, () =>
      api("POST", "/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "6000000" }),
    );
    const accruals = [1, 2, 3].map(() => earn(s, 1_000_000n));
    const results = await Promise.all(withdrawals);
    await Promise.all(accruals);
    const created = results.filter((r) => r.status === 201);
    for (const r of results) expect([201, 409]).toContain(r.status);
    // 30 USDC before the race, 33 after: five withdrawals of 6 fit either way, a sixth never does.
    expect(created).toHaveLength(5);
    const bodies = (await Promise.all(created.map((r) => r.json()))) as { approvalId: string }[];
    // Decide them all at once, each twice (approve and reject race): one decision each.
    const decisions = await Promise.all(
      bodies.flatMap((b, i) => [
        api(
          "POST",
          `/v1/admin/approvals/${b.approvalId}/${i % 2 ? "approve" : "reject"}`,
          operator.apiKey,
          i % 2 ? undefined : { reason: "test" },
        ),
        api("POST", `/v1/admin/approvals/${b.approvalId}/reject`, operator.apiKey, { reason: "race" }),
      ]),
    );
    const statuses = decisions.map((d) => d.status);
    expect(statuses.filter((x) => x === 200)).toHaveLength(bodies.length);
    expect(statuses.filter((x) => x === 409)).toHaveLength(bodies.length);

    expect(await unbalancedTransactions(pool)).toEqual([]);
    const b = await supplierBalance(pool, s.accountId);
    const { rows } = await pool.query<{ accrued: string }>(
      "SELECT sum(amount_micro)::text AS accrued FROM earnings_ledger WHERE account_id = $1",
      [s.accountId],
    );
    expect(b.availableMicro + b.pendingPayoutMicro + b.paidMicro).toBe(BigInt(rows[0]!.accrued));
    expect(b.availableMicro).toBeGreaterThanOrEqual(0n);
    await operator.cleanup();
  });
});

describe("PUT /v1/peer/wallet", () => {
  it("validates the address per network and names the field", async () => {
    const s = await supplier();
    for (const address of [
      EVM_WALLET.toLowerCase(),
      "0x1234",
      "0x70997970C51812dc3A010C7d01b50e0d17dc79c8",
    ]) {
      const res = await api("PUT", "/v1/peer/wallet", s.apiKey, { network: "base", address });
      expect(res.status, address).toBe(400);
      const err = await errorOf(res);
      expect(err.code).toBe("E_VALIDATION");
      expect(err.message).toContain("address");
    }
    // A program-derived address (off the ed25519 curve: nobody holds its key).
    const pda = "2bMy3UqNfAtScCPLV9V3bT4RujKGRc8vrJX3cKddz6yf";
    for (const address of [pda, "not-base58-0OIl", EVM_WALLET]) {
      const res = await api("PUT", "/v1/peer/wallet", s.apiKey, { network: "solana", address });
      expect(res.status, address).toBe(400);
    }
    const bad = await api("PUT", "/v1/peer/wallet", s.apiKey, { network: "tron", address: EVM_WALLET });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).message).toContain("network");
    expect(
      (await api("PUT", "/v1/peer/wallet", s.apiKey, { network: "solana", address: SOLANA_WALLET })).status,
    ).toBe(200);
  });

  it("a new wallet is payable only after 7 days; the same wallet again changes nothing; changes are audited", async () => {
    const s = await supplier();
    const before = Date.now();
    const res = await api("PUT", "/v1/peer/wallet", s.apiKey, { network: "base", address: EVM_WALLET });
    const w = (await res.json()) as { payableFrom: string; changed: boolean };
    expect(w.changed).toBe(true);
    const days = (Date.parse(w.payableFrom) - before) / 86_400_000;
    expect(days).toBeGreaterThan(6.99);
    expect(days).toBeLessThan(7.01);
    const again = (await (
      await api("PUT", "/v1/peer/wallet", s.apiKey, { network: "base", address: EVM_WALLET })
    ).json()) as {
      payableFrom: string;
      changed: boolean;
    };
    expect(again).toMatchObject({ changed: false, payableFrom: w.payableFrom });
    const { rows } = await pool.query(
      "SELECT action FROM audit_log WHERE subject = $1 AND action = 'wallet.set'",
      [s.accountId],
    );
    expect(rows).toHaveLength(1);
  });

  it("needs a supply key", async () => {
    const reseller = await createTenant(pool, redis, { kind: "reseller" });
    const res = await api("PUT", "/v1/peer/wallet", reseller.apiKey, {
      network: "base",
      address: EVM_WALLET,
    });
    expect(res.status).toBe(403);
    expect((await errorOf(res)).details).toEqual({ requiredScope: "supply" });
    expect((await api("GET", "/v1/peer/withdrawals", undefined)).status).toBe(401);
    await reseller.cleanup();
  });
});

describe("POST /v1/peer/withdrawals", () => {
  it("refuses during cooling with the date and without a wallet; a Solana wallet withdraws (docs/adr/0019)", async () => {
    const s = await supplier({ earnedMicro: 20_000_000n });
    const none = await api("POST", "/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "10000000" });
    expect(none.status).toBe(409);
    expect((await errorOf(none)).code).toBe("E_WALLET_REQUIRED");
    const w = (await (
      await api("PUT", "/v1/peer/wallet", s.apiKey, { network: "base", address: EVM_WALLET })
    ).json()) as {
      payableFrom: string;
    };
    const cooling = await api("POST", "/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "10000000" });
    expect(cooling.status).toBe(409);
    const err = await errorOf(cooling);
    expect(err.code).toBe("E_WALLET_COOLING");
    expect(err.details).toEqual({ payableFrom: w.payableFrom });
    expect(err.message).toContain(w.payableFrom);
    await api("PUT", "/v1/peer/wallet", s.apiKey, { network: "solana", address: SOLANA_WALLET });
    await pool.query("UPDATE payout_wallets SET payable_from = now() WHERE account_id = $1", [s.accountId]);
    const sol = await api("POST", "/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "10000000" });
    expect(sol.status).toBe(201);
    expect(await sol.json()).toMatchObject({
      network: "solana",
      address: SOLANA_WALLET,
      status: "pending_approval",
    });
  });

  it("applies 5 USDC to custom agent integrations and 10 USDC to SDK devices, naming the minimum", async () => {
    const agent = await supplier({ earnedMicro: 20_000_000n });
    const sdk = await supplier({ earnedMicro: 20_000_000n, sdk: true });
    await walletOutOfCooling(agent);
    await walletOutOfCooling(sdk);
    const low = await api("POST", "/v1/peer/withdrawals", agent.apiKey, { amountMicroUsdc: "4999999" });
    expect(low.status).toBe(422);
    const lowErr = await errorOf(low);
    expect(lowErr).toMatchObject({
      code: "E_BELOW_MINIMUM",
      details: { minimumMicro: "5000000", supplyKind: "agent" },
    });
    expect(lowErr.message).toContain("5 USDC");
    expect(
      (await api("POST", "/v1/peer/withdrawals", agent.apiKey, { amountMicroUsdc: 5_000_000 })).status,
    ).toBe(201);
    const sdkLow = await api("POST", "/v1/peer/withdrawals", sdk.apiKey, { amountMicroUsdc: "9000000" });
    expect(await errorOf(sdkLow)).toMatchObject({
      code: "E_BELOW_MINIMUM",
      details: { minimumMicro: "10000000" },
    });
    expect(
      (await api("POST", "/v1/peer/withdrawals", sdk.apiKey, { amountMicroUsdc: "10000000" })).status,
    ).toBe(201);
    const over = await api("POST", "/v1/peer/withdrawals", sdk.apiKey, { amountMicroUsdc: "10000001" });
    expect(await errorOf(over)).toMatchObject({
      code: "E_INSUFFICIENT_BALANCE",
      details: { availableMicro: "10000000" },
    });
    const bad = await api("POST", "/v1/peer/withdrawals", sdk.apiKey, { amountMicroUsdc: "1.5" });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).message).toContain("amountMicroUsdc");

    const list = (await (await api("GET", "/v1/peer/withdrawals", sdk.apiKey)).json()) as {
      availableMicroUsdc: string;
      pendingPayoutMicroUsdc: string;
      withdrawals: { status: string; amountMicroUsdc: string; address: string }[];
    };
    expect(list.availableMicroUsdc).toBe("10000000");
    expect(list.pendingPayoutMicroUsdc).toBe("10000000");
    expect(list.withdrawals).toEqual([
      expect.objectContaining({
        status: "pending_approval",
        amountMicroUsdc: "10000000",
        address: EVM_WALLET,
      }),
    ]);
  });
});

describe("the approval gate", () => {
  it("an ops-agent lists approvals but cannot approve or reject; a human approves once", async () => {
    const s = await supplier({ earnedMicro: 10_000_000n });
    await walletOutOfCooling(s);
    const wd = (await (
      await api("POST", "/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "5000000" })
    ).json()) as {
      id: string;
      approvalId: string;
    };
    const agent = await createTenant(pool, redis, { kind: "ops" });
    const human = await createTenant(pool, redis, { kind: "operator" });
    const list = await api("GET", "/v1/admin/approvals?status=pending", agent.apiKey);
    expect(list.status).toBe(200);
    const approvals = ((await list.json()) as { approvals: { id: string; subject: string }[] }).approvals;
    expect(approvals).toContainEqual(expect.objectContaining({ id: wd.approvalId, subject: wd.id }));
    for (const verb of ["approve", "reject"]) {
      const res = await api("POST", `/v1/admin/approvals/${wd.approvalId}/${verb}`, agent.apiKey, {
        reason: "x",
      });
      expect(res.status).toBe(403);
      expect(await errorOf(res)).toMatchObject({
        code: "E_SCOPE_REQUIRED",
        details: { requiredScope: "operate" },
      });
    }
    expect((await api("POST", `/v1/admin/approvals/${wd.approvalId}/reject`, human.apiKey, {})).status).toBe(
      400,
    );
    const ok = await api("POST", `/v1/admin/approvals/${wd.approvalId}/approve`, human.apiKey);
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as {
      approval: { status: string; decidedBy: string };
      payout: { status: string; reason?: string };
    };
    expect(body.approval).toMatchObject({ status: "approved", decidedBy: human.apiKeyId });
    // No treasury in this suite: the payout waits queued (the anvil suite pays it), or is skipped
    // while another file's test holds the kill switch.
    expect([
      { status: "queued", txHash: null, reason: "treasury_not_configured" },
      { status: "skipped", reason: "kill_switch" },
    ]).toContainEqual(body.payout);
    expect((await api("POST", `/v1/admin/approvals/${wd.approvalId}/approve`, human.apiKey)).status).toBe(
      409,
    );
    const { rows } = await pool.query(
      "SELECT actor FROM audit_log WHERE subject = $1 AND action = 'approval.approve'",
      [wd.approvalId],
    );
    expect(rows).toEqual([{ actor: human.apiKeyId }]);
    await agent.cleanup();
    await human.cleanup();
  });

  it("a rejection returns the amount to the available balance", async () => {
    const s = await supplier({ earnedMicro: 8_000_000n });
    await walletOutOfCooling(s);
    const human = await createTenant(pool, redis, { kind: "operator" });
    const wd = (await (
      await api("POST", "/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "8000000" })
    ).json()) as {
      approvalId: string;
    };
    expect((await supplierBalance(pool, s.accountId)).availableMicro).toBe(0n);
    const res = await api("POST", `/v1/admin/approvals/${wd.approvalId}/reject`, human.apiKey, {
      reason: "unknown wallet",
    });
    expect(res.status).toBe(200);
    expect(await supplierBalance(pool, s.accountId)).toEqual({
      availableMicro: 8_000_000n,
      pendingPayoutMicro: 0n,
      paidMicro: 0n,
    });
    const list = (await (await api("GET", "/v1/peer/withdrawals", s.apiKey)).json()) as {
      withdrawals: { status: string }[];
    };
    expect(list.withdrawals[0]!.status).toBe("rejected");
    await human.cleanup();
  });
});

describe("a payout that failed on chain", () => {
  it("only a human returns it to the available balance, exactly once under five concurrent calls; the supplier can withdraw again", async () => {
    const s = await supplier({ earnedMicro: 9_000_000n });
    await walletOutOfCooling(s);
    const human = await createTenant(pool, redis, { kind: "operator" });
    const agent = await createTenant(pool, redis, { kind: "ops" });
    const wd = (await (
      await api("POST", "/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "9000000" })
    ).json()) as { id: string; approvalId: string };
    expect((await api("POST", `/v1/admin/approvals/${wd.approvalId}/approve`, human.apiKey)).status).toBe(
      200,
    );
    const back = (apiKey: string, reason: unknown = "reverted: treasury short of gas") =>
      api("POST", `/v1/admin/withdrawals/${wd.id}/return`, apiKey, { reason });

    // Approved and queued (no treasury here): its USDC may still land, so nothing comes back yet.
    const early = await back(human.apiKey);
    expect(early.status).toBe(409);
    expect((await errorOf(early)).message).toMatch(
      /is approved \(payout queued\); only a withdrawal whose payout failed/,
    );

    // The executor's own record of a reverted transfer.
    await recordPayoutFailed(
      pool,
      { withdrawal_id: wd.id, account_id: s.accountId, amount_micro: "9000000", tx_hash: null },
      "reverted",
      { txHash: "0xreverted" },
    );
    expect(await supplierBalance(pool, s.accountId)).toMatchObject({
      availableMicro: 0n,
      pendingPayoutMicro: 9_000_000n,
    });

    // An ops-agent, the supplier itself: refused before anything is read.
    for (const key of [agent.apiKey, s.apiKey]) {
      const res = await back(key);
      expect(res.status).toBe(403);
      expect(await errorOf(res)).toMatchObject({
        code: "E_SCOPE_REQUIRED",
        details: { requiredScope: "operate" },
      });
    }
    for (const reason of ["", "   ", 7])
      expect((await back(human.apiKey, reason)).status, JSON.stringify(reason)).toBe(400);
    const unknown = await api("POST", `/v1/admin/withdrawals/wd_${"0".repeat(24)}/return`, human.apiKey, {
      reason: "x",
    });
    expect(unknown.status).toBe(404);

    const answers = await Promise.all(Array.from({ length: 5 }, () => back(human.apiKey)));
    expect(answers.map((r) => r.status).sort()).toEqual([200, 409, 409, 409, 409]);
    const won = answers.find((r) => r.status === 200)!;
    expect(await won.json()).toMatchObject({ id: wd.id, status: "returned", amountMicroUsdc: "9000000" });
    expect(await supplierBalance(pool, s.accountId)).toEqual({
      availableMicro: 9_000_000n,
      pendingPayoutMicro: 0n,
      paidMicro: 0n,
    });
    const audited = await pool.query(
      "SELECT actor, detail->>'amountMicro' AS amount FROM audit_log WHERE subject = $1 AND action = 'withdrawal.return'",
      [wd.id],
    );
    expect(audited.rows).toEqual([{ actor: human.apiKeyId, amount: "9000000" }]);
    expect(await unbalancedTransactions(pool)).toEqual([]);
    const list = (await (await api("GET", "/v1/peer/withdrawals", s.apiKey)).json()) as {
      withdrawals: { id: string; status: string }[];
    };
    expect(list.withdrawals[0]).toMatchObject({ id: wd.id, status: "returned" });
    const again = await api("POST", "/v1/peer/withdrawals", s.apiKey, { amountMicroUsdc: "9000000" });
    expect(again.status).toBe(201);
    await agent.cleanup();
    await human.cleanup();
  });
});

describe("the kill switch", () => {
  it("an ops-agent engages it, only a human releases it, and engaged the payout executor records skipped", async () => {
    const agent = await createTenant(pool, redis, { kind: "ops" });
    const human = await createTenant(pool, redis, { kind: "operator" });
    const supplierKey = (await supplier()).apiKey;
    try {
      expect((await api("POST", "/v1/admin/kill-switch", supplierKey, { engaged: true })).status).toBe(403);
      const on = await api("POST", "/v1/admin/kill-switch", agent.apiKey, { engaged: true, reason: "test" });
      expect(on.status).toBe(200);
      expect(await on.json()).toMatchObject({ engaged: true });
      const off = await api("POST", "/v1/admin/kill-switch", agent.apiKey, { engaged: false });
      expect(off.status).toBe(403);
      expect(await errorOf(off)).toMatchObject({
        code: "E_SCOPE_REQUIRED",
        details: { requiredScope: "operate" },
      });
      const [out] = await runScheduled(e, [payoutsJob]);
      expect(out).toMatchObject({ job: "payouts", status: "skipped", detail: { reason: "kill_switch" } });
      const { rows } = await pool.query<{ status: string; detail: unknown }>(
        "SELECT status, detail FROM job_runs WHERE job = 'payouts' ORDER BY id DESC LIMIT 1",
      );
      expect(rows[0]).toEqual({ status: "skipped", detail: { reason: "kill_switch" } });
    } finally {
      const release = await api("POST", "/v1/admin/kill-switch", human.apiKey, { engaged: false });
      expect(release.status).toBe(200);
      expect(await release.json()).toEqual({ engaged: false, since: null });
      await agent.cleanup();
      await human.cleanup();
    }
    const { rows } = await pool.query<{ action: string }>(
      "SELECT action FROM audit_log WHERE actor = ANY($1) AND subject = 'kill_switch' ORDER BY chain_seq",
      [[agent.apiKeyId, human.apiKeyId]],
    );
    expect(rows.map((r) => r.action)).toEqual(["kill_switch.engage", "kill_switch.release"]);
  });
});
