import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { freePort } from "./proc.ts";

const run = promisify(execFile);

describe("freePort", () => {
  // Test files run three at a time and each starts launchers that pick ports too: a port picked by
  // one process and not bound yet must not be handed to another (a stack then died of EADDRINUSE).
  it("never hands the same port to two processes picking at the same time", async () => {
    const script = `import { freePort } from ${JSON.stringify(join(import.meta.dirname, "proc.ts"))};
      const ports = []; for (let i = 0; i < 300; i++) ports.push(await freePort());
      console.log(JSON.stringify(ports));`;
    const other = run(process.execPath, ["--input-type=module", "-e", script]);
    const ours: number[] = [];
    for (let i = 0; i < 300; i++) ours.push(await freePort());
    const theirs: number[] = JSON.parse((await other).stdout);
    expect(new Set(ours).size).toBe(300);
    expect(new Set(theirs).size).toBe(300);
    expect(ours.filter((p) => theirs.includes(p))).toEqual([]);
  });
});
