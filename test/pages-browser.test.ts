// The pages as people see them: Debian's Chromium (playwright-core) loads /status and
// /pool-quickstart from the real API under wrangler dev, on a desktop and a phone viewport. The test
// saves a screenshot of each under the run's temp dir and asserts on the DOM, not on pixels.
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reconcileListings } from "../functions/src/services/listing.ts";
import { refreshRollup } from "../functions/src/services/rollup.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";

const e = stateEnv();
const db = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
const redis = tcpRedis(e.REDIS_URL);
// PAGES_SCREENSHOT_DIR keeps the screenshots after the run (the temp dir goes with it).
const shots = process.env.PAGES_SCREENSHOT_DIR ?? mkdtempSync(join(e.PEERPROXY_TEST_TMP, "pages-"));
const COUNTRY = "yb";
const devices: string[] = [];
let api: Api;
let browser: Browser;

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    const id = `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    devices.push(id);
    await redis.hset(keys.presence(id), {
      relayId: "relay-browser",
      relayInternal: "http://127.0.0.1:1",
      sockets: "4",
      ipType: "residential",
      country: COUNTRY.toUpperCase(),
    });
    await redis.raw.zadd(keys.onlineDevices(), Date.now(), id);
    await redis.hset(keys.probe(id), { verified: "1", speedTier: "fast", passStreak: "2", failStreak: "0" });
  }
  await reconcileListings({ redis, db }, Date.now(), "slow");
  await refreshRollup({ redis, db }, new Date());
  [api, browser] = await Promise.all([
    startApi(stateVars(e), { tmp: e.PEERPROXY_TEST_TMP }),
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
}, 90_000);

afterAll(async () => {
  await browser?.close();
  await api?.stop();
  for (const id of devices) {
    await delistEndpoint(redis, id);
    await redis.del(keys.presence(id), keys.probe(id));
    await redis.raw.zrem(keys.onlineDevices(), id);
  }
  await redis.close();
  await db.end();
});

// Evaluated in the page (a string: this file is typed for Node, not the DOM): sideways overflow in px.
const OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth";

const VIEWPORTS = {
  desktop: { width: 1280, height: 900 },
  phone: { width: 390, height: 844 },
} as const;

describe("pages in Chromium", () => {
  it.each(Object.keys(VIEWPORTS) as (keyof typeof VIEWPORTS)[])(
    "/status on a %s: live counts, the chart, no address, no CSP violation, no sideways scrolling",
    async (kind) => {
      const page = await browser.newPage({ viewport: VIEWPORTS[kind] });
      const violations: string[] = [];
      page.on("console", (m) => {
        if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text());
      });
      try {
        const res = await page.goto(`${api.url}/status`);
        expect(res?.status()).toBe(200);
        await page.screenshot({ path: join(shots, `status-${kind}.png`), fullPage: true });
        expect(await page.title()).toBe("Network status · peerproxy");
        expect(Number(await page.textContent('[data-testid="routable-peer"]'))).toBeGreaterThanOrEqual(3);
        const row = await page.$$eval('[data-pool-table="peer"] tbody tr', (trs) =>
          trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent)),
        );
        expect(row).toContainEqual([COUNTRY.toUpperCase(), "3", "3"]);
        expect(await page.$$('svg path[data-pool="peer"]')).toHaveLength(1);
        // The stylesheet loaded (CSP style-src 'self'): the cards are laid out as a grid.
        expect(await page.evaluate('getComputedStyle(document.querySelector(".cards")).display')).toBe(
          "grid",
        );
        const text = (await page.textContent("body")) ?? "";
        expect(text).not.toMatch(/\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b|agent_|relay-browser/);
        const overflow = await page.evaluate(OVERFLOW);
        expect(overflow).toBeLessThanOrEqual(0);
        expect(violations).toEqual([]);
      } finally {
        await page.close();
      }
    },
    60_000,
  );

  it("/pool-quickstart shows the live answer to the sample order and the copy-paste lines", async () => {
    const page = await browser.newPage({ viewport: VIEWPORTS.phone });
    try {
      const direct = await fetch(`${api.url}/v1/x402/pool?tier=peer&country=any&traffic=0.1`);
      await page.goto(`${api.url}/pool-quickstart`);
      await page.screenshot({ path: join(shots, "pool-quickstart-phone.png"), fullPage: true });
      expect(await page.textContent('[data-testid="quote-status"]')).toBe(String(direct.status));
      const shown = JSON.parse((await page.textContent('[data-testid="quote-body"]')) ?? "{}") as object;
      expect(Object.keys(shown).sort()).toEqual(Object.keys((await direct.json()) as object).sort());
      expect(await page.textContent('[data-testid="agent-snippet"]')).toContain(
        `${api.url}/v1/x402/pool?tier=peer&country=any&traffic=0.1`,
      );
      // Long lines scroll inside their <pre>, not the page.
      const overflow = await page.evaluate(OVERFLOW);
      expect(overflow).toBeLessThanOrEqual(0);
    } finally {
      await page.close();
    }
  }, 60_000);
});
