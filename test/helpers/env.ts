import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { type StateEnv, startRedis, startStateServices } from "../../dev/services.ts";

/** The state services scripts/test.ts started for this run; fails clearly when run without it. */
export function stateEnv(): StateEnv & { PEERPROXY_TEST_TMP: string } {
  const need = [
    "REDIS_URL",
    "UPSTASH_REDIS_REST_URL",
    "UPSTASH_REDIS_REST_TOKEN",
    "DATABASE_URL",
    "NEON_WS_PROXY",
    "JWT_SECRET",
    "RELAY_SHARED_SECRET",
    "PEERPROXY_TEST_TMP",
  ];
  const missing = need.filter((k) => !process.env[k]);
  if (missing.length)
    throw new Error(`missing ${missing.join(", ")}: run tests through \`npm test\` (scripts/test.ts)`);
  return Object.fromEntries(need.map((k) => [k, process.env[k]!])) as never;
}

/**
 * A Redis of this file's own (Postgres stays the run's). For files that list endpoints, report
 * tunnel failures or run the API's cron: in the shared Redis the listing cron of one file delists
 * what another listed by hand, and reports pile into one list.
 */
export async function ownRedis(name: string): Promise<{ url: string; stop(): Promise<void> }> {
  return startRedis(mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, `${name}-redis-`)));
}

/** The run's state with a Redis (and its REST bridge for the API) of this file's own; see ownRedis. */
export async function ownRedisState(
  name: string,
): Promise<{ env: ReturnType<typeof stateEnv>; stop(): Promise<void> }> {
  const shared = stateEnv();
  const own = await startStateServices({
    dir: mkdtempSync(join(shared.PEERPROXY_TEST_TMP, `${name}-state-`)),
    databaseUrl: shared.DATABASE_URL,
  });
  return { env: { ...shared, ...own.env }, stop: own.stop };
}
