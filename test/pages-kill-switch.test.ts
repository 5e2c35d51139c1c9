// The kill switch from /admin's forms against the real API under wrangler dev, on a Redis and
// Postgres of its own: engaging stops every loop, so it must not touch the run's shared Redis that
// other files' crons use. An ops-agent engages (and sees it engaged); its release is refused and
// audited; a human releases. Plain HTTP with the session cookie and CSRF token a browser would send
// (the Chromium flows are in pages-signed-in-browser.test.ts).
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type StateServices, startStateServices } from "../dev/services.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "./helpers/api.ts";
import { stateEnv } from "./helpers/env.ts";

const tmp = stateEnv().PEERPROXY_TEST_TMP;
let services: StateServices;
let api: Api;
let db: ReturnType<typeof createPool>;
let redis: ReturnType<typeof tcpRedis>;

beforeAll(async () => {
  services = await startStateServices({ dir: mkdtempSync(join(tmp, "pages-ks-state-")) });
  db = createPool(services.env.DATABASE_URL, services.env.NEON_WS_PROXY);
  redis = tcpRedis(services.env.REDIS_URL);
  api = await startApi(stateVars(services.env), { tmp });
}, 180_000);

afterAll(async () => {
  await api?.stop();
  await redis?.close();
  await db?.end();
  await services?.stop();
});

/** Signs in with `apiKey` as a browser would; its cookie and the CSRF token /admin carries. */
async function session(apiKey: string) {
  const res = await fetch(`${api.url}/sign-in`, {
    method: "POST",
    redirect: "manual",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      origin: api.url,
      "sec-fetch-site": "same-origin",
    },
    body: new URLSearchParams({ apiKey, next: "/admin" }).toString(),
  });
  expect(res.status).toBe(303);
  const cookie = /^([^;]+);/.exec(res.headers.get("set-cookie") ?? "")![1]!;
  const html = await adminPage(cookie);
  const csrf = /name="csrf" value="([0-9a-f]{64})"/.exec(html)![1]!;
  return { cookie, csrf };
}

const adminPage = async (cookie: string) => (await fetch(`${api.url}/admin`, { headers: { cookie } })).text();

const setSwitch = (s: { cookie: string; csrf: string }, engaged: boolean, reason = "") =>
  fetch(`${api.url}/admin/kill-switch`, {
    method: "POST",
    redirect: "manual",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      cookie: s.cookie,
      origin: api.url,
      "sec-fetch-site": "same-origin",
    },
    body: new URLSearchParams({ csrf: s.csrf, engaged: String(engaged), reason }).toString(),
  });

describe("/admin kill switch", () => {
  it("an ops-agent engages it from the page; its release is refused (403, audited); a human releases it", async () => {
    const agent = await createAccountWithKey(db, { name: "ks-agent", kind: "ops" });
    const human = await createAccountWithKey(db, { name: "ks-human", kind: "operator" });
    const sa = await session(agent.apiKey);
    const sh = await session(human.apiKey);

    // Released: both see an engage button; only the human would see a release one once engaged.
    expect(await adminPage(sa.cookie)).toContain('data-testid="engage"');
    const on = await setSwitch(sa, true, "page test");
    expect(on.status).toBe(303);
    expect(on.headers.get("location")).toBe("/admin?done=engaged");
    expect(await redis.get(keys.killSwitch())).toMatch(new RegExp(`^engaged by ${agent.apiKeyId} at `));
    const agentView = await adminPage(sa.cookie);
    expect(agentView).toMatch(/data-testid="kill-switch"><strong class="bad">engaged</);
    expect(agentView).not.toContain('data-testid="release"');
    expect(agentView).toContain("Only a human operator releases it.");

    const refused = await setSwitch(sa, false);
    expect(refused.status).toBe(403);
    expect(await redis.get(keys.killSwitch())).not.toBeNull();

    // The loops record that they skipped (the guard reads the same key).
    const cron = await fetch(`${api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`);
    expect(cron.status).toBe(200);
    await expect
      .poll(async () => (await adminPage(sh.cookie)).match(/\(kill_switch\)/g)?.length ?? 0, {
        timeout: 15_000,
      })
      .toBeGreaterThan(0);

    expect(await adminPage(sh.cookie)).toContain('data-testid="release"');
    const off = await setSwitch(sh, false, "done testing");
    expect(off.status).toBe(303);
    expect(off.headers.get("location")).toBe("/admin?done=released");
    expect(await redis.get(keys.killSwitch())).toBeNull();

    const { rows } = await db.query<{ actor: string; action: string }>(
      "SELECT actor, action FROM audit_log WHERE subject = 'kill_switch' ORDER BY chain_seq",
    );
    expect(rows).toEqual([
      { actor: agent.apiKeyId, action: "kill_switch.engage" },
      { actor: agent.apiKeyId, action: "kill_switch.release_refused" },
      { actor: human.apiKeyId, action: "kill_switch.release" },
    ]);
  }, 60_000);
});
