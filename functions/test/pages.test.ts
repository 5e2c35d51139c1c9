// The server-rendered pages inside workerd, against this run's Redis and Postgres: /status shows the
// rollup's counts and its 24-hour chart with a strict CSP and never an address; /pool-quickstart shows
// the very answer this API gives the sample order right now.
import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { reconcileListings } from "../src/services/listing.ts";
import { refreshRollup } from "../src/services/rollup.ts";
import { forgetDevice, markOnline } from "./helpers/presence.ts";

const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
const created: string[] = [];
afterAll(async () => {
  for (const id of created) {
    await forgetDevice(redis, id);
  }
  await pool.end();
});

/** An online, verified peer in `country` whose relay has a loopback internal address. */
async function listedPeer(country: string) {
  const id = `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  created.push(id);
  await markOnline(redis, id, country);
  await redis.hset(keys.probe(id), { verified: "1", speedTier: "fast", passStreak: "2", failStreak: "0" });
  return id;
}

describe("pages", () => {
  it("/status shows routable and online counts per country, a chart point for this minute, a strict CSP, and no address or id", async () => {
    const country = "yq"; // a user-assigned ISO-2 code no other suite uses
    const ids = [await listedPeer(country), await listedPeer(country)];
    await reconcileListings({ redis, db: pool }, Date.now(), "slow");
    await refreshRollup({ redis, db: pool }, new Date());

    const res = await SELF.fetch("http://api.test/status");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    const html = await res.text();
    expect(html.startsWith("<!doctype html>")).toBe(true);
    const row = new RegExp(`<tr><td>${country.toUpperCase()}</td><td>(\\d+)</td><td>(\\d+)</td></tr>`).exec(
      html,
    );
    expect(row?.slice(1)).toEqual(["2", "2"]);
    // The chart has a line for the peer pool: the rollup just wrote this minute's point.
    expect(html).toMatch(/<path class="line s-peer" d="M[\d.]+,[\d.]+/);
    const history = await pool.query<{ listed: number }>(
      "SELECT listed FROM pool_rollup_history WHERE pool = 'peer' ORDER BY minute DESC LIMIT 1",
    );
    expect(history.rows[0]?.listed).toBeGreaterThanOrEqual(2);
    // Counts only: no address, no relay URL, no device id.
    expect(html).not.toMatch(/\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b|relay-test|agent_/);
    for (const id of ids) expect(html).not.toContain(id);
  });

  it("the stylesheet the CSP allows is served from /assets/site.css", async () => {
    const res = await SELF.fetch("http://api.test/assets/site.css");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/css/);
    expect(await res.text()).toContain(".chart");
  });

  it("/pool-quickstart shows the answer the API gives the sample order now, escaped, with the agent snippet", async () => {
    const order = "http://api.test/v1/x402/pool?tier=peer&country=any&traffic=0.1";
    const direct = await SELF.fetch(order);
    const directBody = await direct.json();
    const res = await SELF.fetch("http://api.test/pool-quickstart");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
    const html = await res.text();
    expect(html).toContain(`<strong data-testid="quote-status">${direct.status}</strong>`);
    const shown = /<pre data-testid="quote-body">([\s\S]*?)<\/pre>/.exec(html)?.[1] ?? "";
    const unescaped = shown
      .replaceAll("&quot;", '"')
      .replaceAll("&#39;", "'")
      .replaceAll("&lt;", "<")
      .replaceAll("&gt;", ">")
      .replaceAll("&amp;", "&");
    // The same error code or x402 body the direct request got (request ids differ).
    const shownBody = JSON.parse(unescaped) as Record<string, unknown>;
    expect(Object.keys(shownBody).sort()).toEqual(Object.keys(directBody as object).sort());
    expect(html).not.toMatch(/<script/i);
    expect(html).toContain("wrapFetchWithPayment");
    expect(html).toContain(order.replaceAll("&", "&amp;"));
  });
});
