// `npm start`'s entry under the machine's own Node: too old to load TypeScript, it must say to use
// `npm start` rather than die with ERR_UNKNOWN_FILE_EXTENSION.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "..");

/** The first `node` on PATH outside node_modules (the system's), when it is older than 22.12. */
function oldSystemNode(): string | undefined {
  const path = (process.env.PATH ?? "").split(":").filter((d) => d && !d.includes("node_modules"));
  for (const dir of path) {
    const bin = join(dir, "node");
    const r = spawnSync(bin, ["-p", "process.versions.node"], { encoding: "utf8" });
    if (r.status !== 0) continue;
    const [major = 0, minor = 0] = r.stdout.trim().split(".").map(Number);
    return major < 22 || (major === 22 && minor < 12) ? bin : undefined;
  }
  return undefined;
}

describe("dev/stack.mjs (npm start's entry)", () => {
  const node = oldSystemNode();
  it.skipIf(!node)("under a Node older than 22.12 says to run npm start, and exits 1", () => {
    const r = spawnSync(node!, ["dev/stack.mjs"], { cwd: root, encoding: "utf8", timeout: 20_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/needs Node >= 22\.12/);
    expect(r.stderr).toMatch(/run `npm start`/);
    expect(r.stderr).not.toMatch(/ERR_UNKNOWN_FILE_EXTENSION/);
  });

  it("is what npm start runs", () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    expect(pkg.scripts.start).toMatch(/node dev\/stack\.mjs$/);
  });
});
