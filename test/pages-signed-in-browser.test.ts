// The signed-in pages as people use them, with JavaScript off: Debian's Chromium (playwright-core)
// against the real local network (the API under wrangler dev, relay, gateway and prober as their own
// processes, the peer SDK's CLI as the supplier's device, the cron driven by hand). A supplier signs
// in and watches its device go from unverified (a failing probe, with its code) to listed, earns,
// sets a wallet and withdraws; an ops-agent sees the queue without buttons and its forged approve is
// refused; a human approves. Screenshots of each page go under the run's temp dir; DOM assertions.
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { ownRedisState } from "./helpers/env.ts";
import { type SupplyNetwork, startSupplyNetwork } from "./helpers/supply-network.ts";

// A Redis of its own: this file runs the API cron, which would delist what other files list.
const state = await ownRedisState("pages-signed-in");
const e = state.env;
const root = join(import.meta.dirname, "..");
// PAGES_SCREENSHOT_DIR keeps the screenshots after the run (the temp dir goes with it).
const shots = process.env.PAGES_SCREENSHOT_DIR ?? mkdtempSync(join(e.PEERPROXY_TEST_TMP, "pages-signed-in-"));
const tmp = mkdtempSync(join(e.PEERPROXY_TEST_TMP, "pages-peer-"));
// A user-assigned ISO-2 code no other test uses: the gateway can pick only this file's device.
const COUNTRY = "xp";
// EIP-55 spelling of a fresh address (anvil's second default account; nothing is paid here).
const WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

let net: SupplyNetwork;
let browser: Browser;
let peer: Service | undefined;
let deviceId = "";
const contexts: BrowserContext[] = [];

function startPeer(allowPrivate: boolean): Service {
  return startProcess("peer", process.execPath, ["peer-node/src/cli.ts"], {
    cwd: root,
    env: {
      API_KEY: net.supplier.apiKey,
      AGENT_NAME: "pages-device",
      PEER_API_URL: net.api.url,
      RELAY_URL: net.relayUrl,
      PEER_STATE_FILE: join(tmp, "peer.json"),
      // Off first: the prober's probe (to a loopback target) fails at the device, so it stays unverified.
      PEER_ALLOW_PRIVATE_TARGETS: allowPrivate ? "true" : "false",
      COUNTRY: COUNTRY.toUpperCase(),
      VERBOSE: "true",
    },
  });
}

beforeAll(async () => {
  [net, browser] = await Promise.all([
    startSupplyNetwork(e, { country: COUNTRY }),
    chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
      ],
    }),
  ]);
  // A rate high enough that a few MB through the gateway earn more than the 10 USDC minimum.
  await net.pool.query("UPDATE accounts SET earnings_per_gb = $2 WHERE id = $1", [
    net.supplier.accountId,
    JSON.stringify({ mobile: "5000", residential: "5000", datacenter: "5000" }),
  ]);
}, 240_000);

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  await peer?.stop();
  if (deviceId && net) {
    await delistEndpoint(net.redis, deviceId).catch(() => {});
    await net.redis.del(keys.presence(deviceId), keys.probe(deviceId), keys.deviceBytes(deviceId));
    await net.redis.raw.zrem(keys.probeDue(), deviceId);
  }
  await net?.stop();
  await state.stop();
});

const cron = () => fetch(`${net.api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`);

async function newPage(): Promise<{ context: BrowserContext; page: Page; violations: string[] }> {
  // JavaScript off: every flow below is forms that post and redirect.
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    javaScriptEnabled: false,
  });
  contexts.push(context);
  const page = await context.newPage();
  const violations: string[] = [];
  page.on("console", (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text());
  });
  return { context, page, violations };
}

async function signIn(page: Page, apiKey: string, next: "/farmer" | "/admin") {
  await page.goto(`${net.api.url}/sign-in?next=${next}`);
  await page.fill("#apiKey", apiKey);
  const [landed] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === next && r.request().method() === "GET"),
    page.waitForURL(`**${next}`),
    page.click('button[type="submit"]:has-text("Sign in")'),
  ]);
  // A page that failed to render says why here, not as an empty title a line later.
  if (!landed.ok())
    throw new Error(
      `${next} answered ${landed.status()}: ${(await landed.text()).slice(0, 500)}\n${net.api.service.output().slice(-2000)}`,
    );
}

// Evaluated in the page (a string: this file is typed for Node, not the DOM): sideways overflow in px.
const OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth";
const shot = (page: Page, name: string) =>
  page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const text = async (page: Page, selector: string) => ((await page.textContent(selector)) ?? "").trim();

describe("signed-in pages in Chromium", () => {
  let supplierPage: Page;
  let approvalId = "";

  it("the session cookie is HttpOnly, SameSite=Strict, Path=/ and (local development, plain http) not Secure", async () => {
    const res = await fetch(`${net.api.url}/sign-in`, {
      method: "POST",
      redirect: "manual",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: net.api.url },
      body: new URLSearchParams({ apiKey: net.supplier.apiKey }).toString(),
    });
    expect(res.status).toBe(303);
    const cookie = res.headers.get("set-cookie") ?? "";
    expect(cookie).toMatch(/^pp_session=wss_[0-9a-f]{64};/);
    const flags = cookie.split(";").map((f) => f.trim().toLowerCase());
    expect(flags).toEqual(expect.arrayContaining(["httponly", "samesite=strict", "path=/"]));
    expect(flags).not.toContain("secure");
  });

  it("a supplier signs in and sees its device unverified with the failing probe's code, then listed", async () => {
    peer = startPeer(false);
    const m = await peer.waitFor(/\[REGISTERED\] device=(agent_[0-9a-f]{16})/, 30_000);
    deviceId = m[1]!;
    // The prober's first probe fails at the device (loopback targets refused): online, unverified.
    await waitUntil(
      async () => {
        const p = await net.redis.hgetall(keys.probe(deviceId));
        return p.lastResult !== undefined && p.lastResult !== "ok";
      },
      60_000,
      "a failed probe of the device",
    );
    const { page, violations } = await newPage();
    supplierPage = page;
    await signIn(page, net.supplier.apiKey, "/farmer");
    expect(await page.title()).toBe("Supplier · peerproxy");
    const row = `tr[data-device="${deviceId}"]`;
    expect(await text(page, `${row} [data-testid="device-state"]`)).toBe("unverified");
    const probe = await text(page, `${row} [data-testid="last-probe"]`);
    expect(probe).not.toMatch(/^ok/);
    expect(probe).toMatch(/^[a-z_]+, \d+ (s|min) ago$/);
    await shot(page, "farmer-unverified");

    // The device may reach loopback now: the prober passes it twice and the cron lists it.
    await peer.stop();
    peer = startPeer(true);
    await peer.waitFor(/\[ACK\]/, 30_000);
    await net.waitListed(deviceId, 90_000);
    await page.reload();
    expect(await text(page, `${row} [data-testid="device-state"]`)).toBe("listed");
    expect(await text(page, `${row} [data-testid="last-probe"]`)).toMatch(/^ok,/);
    expect(["fast", "medium", "slow"]).toContain(await text(page, `${row} [data-testid="speed-tier"]`));
    await shot(page, "farmer-listed");
    expect(violations).toEqual([]);
  }, 200_000);

  it("it earns, sets a wallet (cooling shown), and once cooled withdraws: the withdrawal shows pending", async () => {
    const page = supplierPage;
    const got = await net.proxiedGet(`${net.target.url}/bytes/4000000`, { pinDevice: deviceId });
    expect(got).toMatchObject({ status: 200, bytes: 4_000_000 });
    await waitUntil(
      async () => {
        await cron();
        const { rows } = await net.pool.query<{ n: string }>(
          "SELECT coalesce(sum(amount_micro), 0)::text AS n FROM earnings_ledger WHERE account_id = $1",
          [net.supplier.accountId],
        );
        return BigInt(rows[0]!.n) >= 12_000_000n;
      },
      30_000,
      "the cron to accrue the supplier's bytes",
    );
    await page.reload();
    expect(await text(page, '[data-testid="available"]')).toMatch(/^\d+(\.\d+)? USDC$/);
    expect(await page.$$('svg path[data-series="earnings"]')).toHaveLength(1);

    await page.selectOption("#network", "base");
    await page.fill("#address", WALLET);
    await Promise.all([
      page.waitForURL("**/farmer?done=wallet"),
      page.click('button:has-text("Save wallet")'),
    ]);
    expect(await text(page, '[data-testid="notice"]')).toContain("Wallet saved");
    expect(await text(page, '[data-testid="wallet-cooling"]')).toMatch(/^cooling until \d{4}-\d\d-\d\d/);
    expect(await text(page, '[data-testid="withdraw-rules"]')).toMatch(
      /Minimum 10 USDC \(accounts with SDK devices\)/,
    );

    // Withdrawing now is refused with the cooling date, on the page.
    await page.fill("#amount", "12");
    await page.click('button:has-text("Request withdrawal")');
    expect(await text(page, '[data-testid="notice"]')).toMatch(/cooling period until/);
    // Seven days pass (as the payout circle test has them pass).
    await net.pool.query(
      "UPDATE payout_wallets SET payable_from = now() - interval '1 second' WHERE account_id = $1",
      [net.supplier.accountId],
    );
    await page.goto(`${net.api.url}/farmer`);
    expect(await text(page, '[data-testid="wallet-cooling"]')).toBe("payable");
    await page.fill("#amount", "12");
    await Promise.all([
      page.waitForURL("**/farmer?done=withdrawal"),
      page.click('button:has-text("Request withdrawal")'),
    ]);
    const rows = await page.$$eval('[data-testid="withdrawals"] tbody tr', (trs) =>
      trs.map((tr) => [
        tr.getAttribute("data-withdrawal"),
        ...[...tr.querySelectorAll("td")].map((td) => td.textContent),
      ]),
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]![2]).toBe("12 USDC");
    expect(rows[0]![3]).toBe("pending_approval");
    const { rows: a } = await net.pool.query<{ id: string }>(
      "SELECT id FROM approvals WHERE kind = 'payout' AND subject = $1",
      [rows[0]![0]],
    );
    approvalId = a[0]!.id;
    await shot(page, "farmer-withdrawal-pending");
  }, 90_000);

  it("an ops-agent sees the queue with no approve buttons; its forged approve, CSRF token and all, is refused", async () => {
    const agent = await createAccountWithKey(net.pool, { name: `pages-agent-${deviceId}`, kind: "ops" });
    const { context, page, violations } = await newPage();
    await signIn(page, agent.apiKey, "/admin");
    const row = `tr[data-approval="${approvalId}"]`;
    expect(await page.$(row)).not.toBeNull();
    expect(await page.$$('[data-testid="approve"], [data-testid="reject"]')).toHaveLength(0);
    expect(await text(page, '[data-testid="agent-note"]')).toContain("only a human operator approves");
    expect(await page.$$('[data-testid="loops"] tr[data-loop="payouts"]')).toHaveLength(1);
    await shot(page, "admin-ops-agent");
    // The forged post: the agent's own session cookie and CSRF token, from the page's origin.
    const csrf = await page.getAttribute('form[action="/sign-out"] input[name="csrf"]', "value");
    const forged = await context.request.post(`${net.api.url}/admin/approvals/${approvalId}/approve`, {
      form: { csrf: csrf! },
      headers: { origin: net.api.url },
      maxRedirects: 0,
    });
    expect(forged.status()).toBe(403);
    expect(await forged.text()).toContain("Only a human operator");
    // No token at all, or a wrong one: 403 before any rule is looked at.
    for (const bad of [{}, { csrf: "0".repeat(64) }] as Record<string, string>[]) {
      const res = await context.request.post(`${net.api.url}/admin/approvals/${approvalId}/approve`, {
        form: bad,
        headers: { origin: net.api.url },
        maxRedirects: 0,
      });
      expect(res.status()).toBe(403);
    }
    const status = await net.pool.query<{ status: string }>("SELECT status FROM approvals WHERE id = $1", [
      approvalId,
    ]);
    expect(status.rows[0]?.status).toBe("pending");
    const audit = await net.pool.query<{ action: string }>(
      "SELECT action FROM audit_log WHERE actor = $1 AND subject = $2",
      [agent.apiKeyId, approvalId],
    );
    expect(audit.rows.map((r) => r.action)).toEqual(["approval.approve_refused"]);
    expect(violations).toEqual([]);
  }, 60_000);

  it("a human operator approves from the page, and the supplier sees the withdrawal approved", async () => {
    const human = await createAccountWithKey(net.pool, { name: `pages-human-${deviceId}`, kind: "operator" });
    const { page } = await newPage();
    await signIn(page, human.apiKey, "/admin");
    const row = `tr[data-approval="${approvalId}"]`;
    await Promise.all([
      page.waitForURL("**/admin?done=approved"),
      page.click(`${row} [data-testid="approve"]`),
    ]);
    expect(await text(page, '[data-testid="notice"]')).toContain("Approved");
    expect(await page.$(row)).toBeNull();
    expect(
      await text(page, `[data-testid="decided"] li[data-approval="${approvalId}"] [data-testid="decision"]`),
    ).toBe("approved");
    await shot(page, "admin-human-approved");
    await supplierPage.goto(`${net.api.url}/farmer`);
    // No treasury in this network: the payout waits queued, the withdrawal is approved.
    expect(await text(supplierPage, '[data-testid="withdrawal-status"]')).toBe("approved");
    // Both pages on a phone: wide tables scroll inside their box, not the page.
    for (const [p, name] of [
      [page, "admin-phone"],
      [supplierPage, "farmer-phone"],
    ] as const) {
      await p.setViewportSize({ width: 390, height: 844 });
      await p.reload();
      await shot(p, name);
      expect(await p.evaluate(OVERFLOW)).toBeLessThanOrEqual(0);
    }
  }, 60_000);

  it("a revoked key's session stops working: the next page load is the sign-in page", async () => {
    const operator = await createAccountWithKey(net.pool, { name: `pages-op-${deviceId}`, kind: "operator" });
    const res = await fetch(`${net.api.url}/v1/admin/accounts/${net.supplier.accountId}/api-keys`, {
      method: "POST",
      headers: { "x-api-key": operator.apiKey, "content-type": "application/json" },
      body: JSON.stringify({ scopes: ["supply"] }),
    });
    const second = (await res.json()) as { apiKey: string; keyId: string };
    expect(res.status).toBe(201);
    const { page } = await newPage();
    await signIn(page, second.apiKey, "/farmer");
    expect(await page.$(`tr[data-device="${deviceId}"]`)).not.toBeNull();
    const revoke = await fetch(`${net.api.url}/v1/admin/api-keys/${second.keyId}`, {
      method: "DELETE",
      headers: { "x-api-key": operator.apiKey },
    });
    expect(revoke.status).toBe(200);
    await page.reload();
    expect(new URL(page.url()).pathname).toBe("/sign-in");
  }, 60_000);

  it("bad sign-ins get a clear message without the key, then the per-IP limit: 429 on the page", async () => {
    const { page } = await newPage();
    const guess = `psx_${"z".repeat(32)}`;
    await page.goto(`${net.api.url}/sign-in`);
    await page.fill("#apiKey", guess);
    const [res] = await Promise.all([
      page.waitForResponse(`${net.api.url}/sign-in`),
      page.click('button:has-text("Sign in")'),
    ]);
    expect([401, 429]).toContain(res.status());
    if (res.status() === 401) {
      expect(await text(page, '[data-testid="sign-in-error"]')).toContain("not accepted");
      await shot(page, "sign-in-refused");
    }
    expect(await page.content()).not.toContain(guess);
    expect(await page.inputValue("#apiKey")).toBe("");
    let status = res.status();
    // The limit is 10 a minute in fixed windows: a window that turns over mid-loop starts the count
    // again, so 21 attempts in a row (a few seconds) put at least 11 into one window.
    for (let i = 0; i < 21 && status !== 429; i++) {
      await page.fill("#apiKey", guess);
      const [r] = await Promise.all([
        page.waitForResponse(`${net.api.url}/sign-in`),
        page.click('button:has-text("Sign in")'),
      ]);
      status = r.status();
    }
    expect(status).toBe(429);
    expect(await text(page, '[data-testid="sign-in-error"]')).toMatch(/Too many sign-in attempts/);
    await shot(page, "sign-in-rate-limited");
  }, 60_000);
});
