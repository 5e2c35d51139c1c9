import { defineConfig } from "vitest/config";

// Node-side tests: unit tests beside their code and integration tests in test/. State services
// (Redis, Postgres, stand-ins) are started once per run by scripts/test.ts and passed in the env.
export default defineConfig({
  test: {
    include: [
      "shared/**/*.test.ts",
      "relay-node/**/*.test.ts",
      "gateway-node/**/*.test.ts",
      "peer-node/**/*.test.ts",
      "prober/**/*.test.ts",
      "dev/**/*.test.ts",
      "test/**/*.test.ts",
    ],
    exclude: ["**/node_modules/**", "functions/**"],
    testTimeout: 60_000,
    hookTimeout: 90_000,
    // Two cores: integration tests spawn real processes, so keep file-level parallelism modest.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
