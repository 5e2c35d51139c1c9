import { defineConfig } from "vitest/config";
import SlowFirst from "./test/helpers/slow-first.ts";

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
    // In CI a failed test runs once more: a clean clone on a busy machine now and then loses a race
    // no local run shows. `npm test` lists every test that passed only on its retry, with the first
    // lines of its first error, as "flaky", so none hides. Local runs never retry.
    retry: process.env.CI ? 1 : 0,
    // Two cores, three files at a time: most files wait on processes they started (a stack coming
    // up, a chain, a browser), so with two the cores sat idle ~40 % of the run (user+sys 496 s in
    // 429 s); three took the suite from 7 min 9 s to 6 min. More would starve timing-bound tests.
    maxWorkers: 3,
    fileParallelism: true,
    // Long files first even in a fresh clone (no duration cache), so both workers end together.
    sequence: { sequencer: SlowFirst },
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
