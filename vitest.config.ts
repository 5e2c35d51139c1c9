import { defineConfig } from "vitest/config";

// Node-side tests: unit tests beside their code and integration tests in test/. State services
// (Redis, Postgres, stand-ins) are started once per run by scripts/test.ts and passed in the env.
// The `x402` project's files share one anvil chain, gateway and `wrangler dev` API, booted by its
// globalSetup only when one of them runs (test/helpers/x402.global.ts, docs/adr/0022).
const X402_SHARED = [
  "test/x402-pool.test.ts",
  "test/x402-proxy.test.ts",
  "test/x402-guards.test.ts",
  "test/x402-failclosed.test.ts",
];

export default defineConfig({
  test: {
    exclude: ["**/node_modules/**", "functions/**"],
    testTimeout: 60_000,
    hookTimeout: 90_000,
    // Two cores: integration tests spawn real processes, so keep file-level parallelism modest.
    maxWorkers: 2,
    fileParallelism: true,
    projects: [
      {
        extends: true,
        test: {
          name: "node",
          include: [
            "shared/**/*.test.ts",
            "relay-node/**/*.test.ts",
            "gateway-node/**/*.test.ts",
            "peer-node/**/*.test.ts",
            "prober/**/*.test.ts",
            "dev/**/*.test.ts",
            "test/**/*.test.ts",
          ],
          exclude: ["**/node_modules/**", "functions/**", ...X402_SHARED],
        },
      },
      {
        extends: true,
        test: {
          name: "x402",
          include: X402_SHARED,
          globalSetup: ["test/helpers/x402.global.ts"],
          // The fixture boots anvil, a gateway and wrangler dev before the first file runs.
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
