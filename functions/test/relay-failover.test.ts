// The API hands out live relays (issue 13): relays list their public URL in `relays:alive` every
// presence refresh (relay_alive.lua), and registration and refresh pick, in the device's region
// order, the first relay listed alive. The pick runs on the real Redis with region settings made
// per test (unique relay URLs), because `relay_regions` and `relays:alive` are global.
import { env, SELF } from "cloudflare:test";
import { afterAll, describe, expect, it } from "vitest";
import { createAccountWithKey } from "../../shared/accounts.ts";
import { createPool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { runScript } from "../../shared/lua/script.ts";
import { relayAlive } from "../../shared/lua/scripts.gen.ts";
import { upstashRedis } from "../../shared/redis.ts";
import { normaliseRelayUrl } from "../../shared/relay-url.ts";
import { pickRelay, type RelayRegions } from "../src/services/devices.ts";

const e = env as unknown as Record<string, string>;
const pool = createPool(e.DATABASE_URL!, e.NEON_WS_PROXY);
const redis = upstashRedis(e.UPSTASH_REDIS_REST_URL!, e.UPSTASH_REDIS_REST_TOKEN!);
const deps = { redis, now: () => new Date() };
afterAll(() => pool.end());

/** Three regions with relay URLs no other test uses; us is the default. */
function regions(): RelayRegions & { url: Record<"us" | "eu" | "ap", string> } {
  const id = crypto.randomUUID().slice(0, 8);
  const url = {
    us: `wss://relay-us-${id}.test`,
    eu: `wss://relay-eu-${id}.test`,
    ap: `wss://relay-ap-${id}.test`,
  };
  return {
    url,
    default: "us",
    regions: {
      us: { relayUrl: url.us, countries: ["US"] },
      eu: { relayUrl: url.eu, countries: ["DE"] },
      ap: { relayUrl: url.ap, countries: ["JP"] },
    },
  };
}

/** What a relay's presence loop writes: alive for ttlMs from now (negative: ran out that long ago). */
async function reported(url: string, ttlMs: number) {
  const now = Date.now();
  // A trailing slash: the relay's own spelling of its URL may differ from the setting's.
  await runScript(redis, relayAlive, [keys.relaysAlive()], [normaliseRelayUrl(`${url}/`), now + ttlMs, 0]);
}

async function unlisted(url: string) {
  await runScript(redis, relayAlive, [keys.relaysAlive()], [normaliseRelayUrl(url), 0, 0]);
}

describe("assignRelay picks a live relay", () => {
  it("returns the preferred region's relay while it is alive", async () => {
    const cfg = regions();
    await Promise.all([reported(cfg.url.eu, 30_000), reported(cfg.url.us, 30_000)]);
    expect(await pickRelay(deps, cfg, { hint: "DE", edge: "US" })).toBe(cfg.url.eu);
    expect(await pickRelay(deps, cfg, { edge: "US" })).toBe(cfg.url.us);
    expect(await pickRelay(deps, cfg, { hint: "FR" })).toBe(cfg.url.us);
  });

  it("skips a relay whose entry ran out or is absent: hint region, then edge region, then default, then the rest", async () => {
    const cfg = regions();
    await Promise.all([reported(cfg.url.eu, -1_000), reported(cfg.url.us, 30_000)]);
    // eu stale: the edge's region (us) next.
    expect(await pickRelay(deps, cfg, { hint: "DE", edge: "US" })).toBe(cfg.url.us);
    // us too gone (drained): no preferred region left alive, so the other region (ap).
    await Promise.all([unlisted(cfg.url.us), reported(cfg.url.ap, 30_000)]);
    expect(await pickRelay(deps, cfg, { hint: "DE", edge: "US" })).toBe(cfg.url.ap);
    // The edge region beats the default: eu dead, JP's region alive.
    await reported(cfg.url.us, 30_000);
    expect(await pickRelay(deps, cfg, { hint: "DE", edge: "JP" })).toBe(cfg.url.ap);
  });

  it("returns the preferred region's relay when no relay of the setting is alive", async () => {
    const cfg = regions();
    expect(await pickRelay(deps, cfg, { hint: "DE" })).toBe(cfg.url.eu);
    await Promise.all([reported(cfg.url.eu, -5_000), reported(cfg.url.us, -5_000)]);
    expect(await pickRelay(deps, cfg, { hint: "DE", edge: "US" })).toBe(cfg.url.eu);
    expect(await pickRelay(deps, cfg, {})).toBe(cfg.url.us);
  });
});

describe("refresh tells the device its relay", () => {
  it("both refresh endpoints answer `relay`, chosen from the country hint stored at registration", async () => {
    // Seeded settings (migration 0002): eu lists DE. No relay reports these URLs in tests.
    const t = await createAccountWithKey(pool, { name: `failover-${crypto.randomUUID()}`, kind: "supplier" });
    const ip = `203.0.113.${Math.floor(Math.random() * 250) + 1}-${crypto.randomUUID().slice(0, 6)}`;
    const post = (path: string, body: unknown) =>
      SELF.fetch(`http://api.test${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", "cf-connecting-ip": ip },
        body: JSON.stringify(body),
      });
    const reg = (await (
      await post("/v1/peer/agents/register", {
        name: "failover-de",
        apiKey: t.apiKey,
        type: "custom",
        country: "DE",
      })
    ).json()) as { deviceId: string; refreshToken: string; relay: string };
    expect(reg.relay).toBe("wss://relay-eu.peerproxy.dev");

    const token = await post(`/v1/peer/token/${reg.deviceId}/refresh`, { refreshToken: reg.refreshToken });
    expect(token.status).toBe(200);
    expect(await token.json()).toMatchObject({ relay: "wss://relay-eu.peerproxy.dev" });

    const agent = await post(`/v1/peer/agents/${reg.deviceId}/refresh`, { refreshToken: reg.refreshToken });
    expect(agent.status).toBe(200);
    const body = (await agent.json()) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["jwt", "refreshToken", "relay", "token"]);
    expect(body["relay"]).toBe("wss://relay-eu.peerproxy.dev");
  });
});
