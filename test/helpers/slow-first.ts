import { relative } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/**
 * Seconds a file takes in a full `npm test` (its "slowest test files" list), for runs without
 * vitest's duration cache: a fresh clone, CI. Refresh by hand when that list changes much; a stale
 * entry only costs some balance between the two workers.
 */
const KNOWN_SLOW: Record<string, number> = {
  "test/stack-sigint.test.ts": 100,
  "test/openapi-fuzz.test.ts": 90,
  "test/bench-smoke.test.ts": 63,
  "test/pages-signed-in-browser.test.ts": 35,
  "test/go-peer.test.ts": 30,
  "test/x402-attacks.test.ts": 27,
  "test/fresh-clone.test.ts": 22,
  "test/seeds.test.ts": 20,
  "gateway-node/idle-caps.test.ts": 19,
  "test/deploy-production.test.ts": 18,
  "test/two-regions.test.ts": 18,
  "test/stack.test.ts": 17,
  "gateway-node/exhaustion.test.ts": 17,
};

/**
 * vitest runs the longest files first when it has their durations from an earlier run, so two
 * workers finish together. Without them it orders by file size, and a short file that runs for
 * 100 s (it starts the whole network ten times) may start last and leave one worker idle for most of
 * it. Here files without a cached duration use KNOWN_SLOW first, within the order of projects.
 */
export default class SlowFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    if (files.every((f) => this.ctx.cache.getTestSpecificationResult(f))) return sorted;
    const hint = (f: TestSpecification) => KNOWN_SLOW[relative(f.project.config.root, f.moduleId)] ?? 0;
    const projects = [...new Set(sorted.map((f) => f.project.name))];
    return projects.flatMap((name) => {
      const own = sorted.filter((f) => f.project.name === name);
      // Array.prototype.sort is stable: unhinted files keep vitest's order.
      return own.sort((a, b) => hint(b) - hint(a));
    });
  }
}
