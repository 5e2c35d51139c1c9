import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Worker tests run inside workerd with the real wrangler.toml; bindings point at the throwaway
// Redis (through the Upstash stand-in) and Postgres (through the Neon proxy) that scripts/test.ts started.
const need = [
  "UPSTASH_REDIS_REST_URL",
  "UPSTASH_REDIS_REST_TOKEN",
  "DATABASE_URL",
  "NEON_WS_PROXY",
  "JWT_SECRET",
] as const;
const missing = need.filter((k) => !process.env[k]);
if (missing.length) {
  throw new Error(`Worker tests need ${missing.join(", ")}: run them through \`npm test\` (scripts/test.ts)`);
}

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "../wrangler.toml" },
      miniflare: {
        bindings: {
          ENVIRONMENT: "test",
          // a fixed test key: the modem-exit tests open what the API sealed with it
          MODEM_UPSTREAM_KEY: "dGVzdC1vbmx5LW1vZGVtLXVwc3RyZWFtLWtleS0zMmI=",
          ...Object.fromEntries(need.map((k) => [k, process.env[k]!])),
        },
      },
    }),
  ],
  test: {
    include: ["**/*.test.ts"],
    testTimeout: 30_000,
    // One runner for every file: each file's own runner re-imported and re-transformed the whole
    // app (Hono, zod, viem, Solana kit), 70 % of this suite's time. The files share no module
    // state they rely on (state lives in this run's Redis and Postgres), and mocks are restored.
    isolate: false,
  },
});
