import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stateEnv } from "./helpers/env.ts";

const root = join(import.meta.dirname, "..");

describe("deploy bundle", () => {
  it("wrangler deploy --dry-run bundles the Worker offline", () => {
    const out = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "bundle-"));
    const r = spawnSync(join(root, "node_modules/.bin/wrangler"), ["deploy", "--dry-run", "--outdir", out], {
      cwd: root,
      encoding: "utf8",
      env: {
        ...process.env,
        WRANGLER_SEND_METRICS: "false",
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
        NO_COLOR: "1",
      },
      timeout: 120_000,
    });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const files = readdirSync(out);
    const main = files.find((f) => f.endsWith(".js"));
    expect(main, files.join(",")).toBeDefined();
    expect(statSync(join(out, main!)).size).toBeGreaterThan(10_000);
    expect(r.stdout + r.stderr).toMatch(/--dry-run: exiting now/);
  });
});
