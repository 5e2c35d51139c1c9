import type { StateEnv } from "../../dev/services.ts";

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
