import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { stateEnv } from "../../test/helpers/env.ts";
import { tcpRedis } from "../redis.node.ts";
import { expandIncludes } from "./include.ts";
import { runScript } from "./script.ts";
import { allScripts } from "./scripts.gen.ts";

const redis = tcpRedis(stateEnv().REDIS_URL);
afterAll(() => redis.close());

describe("Lua scripts", () => {
  it("every .lua file is in the generated module with its current source", () => {
    const files = readdirSync(import.meta.dirname).filter((f) => f.endsWith(".lua"));
    expect(allScripts.map((s) => s.name).sort()).toEqual(files.sort());
    for (const s of allScripts) {
      const read = (f: string) => readFileSync(join(import.meta.dirname, f), "utf8");
      expect(s.source).toBe(expandIncludes(s.name, read(s.name), read));
    }
  });

  it("an include is inlined once, where it stands; a library that includes another is refused", () => {
    const libs: Record<string, string> = {
      "lib/a.lua": "local function a() end\n",
      "lib/b.lua": "--@include lib/a.lua\n",
    };
    const read = (f: string) => libs[f] ?? "";
    expect(expandIncludes("x.lua", "-- x\n--@include lib/a.lua\nreturn 1\n", read)).toBe(
      "-- x\nlocal function a() end\nreturn 1\n",
    );
    expect(() => expandIncludes("x.lua", "--@include lib/b.lua\n", read)).toThrow(/may not include/);
    const select = allScripts.find((s) => s.name === "select_endpoint.lua")!;
    expect(select.source).not.toContain("--@include");
    expect(select.source.match(/local function reindex/g)).toHaveLength(1);
  });

  it("every script starts with a header naming KEYS, ARGV and the return value", () => {
    for (const s of allScripts) {
      const header = s.source
        .split("\n")
        .filter((l) => l.startsWith("--"))
        .join("\n");
      expect(header, s.name).toMatch(/KEYS/);
      expect(header, s.name).toMatch(/ARGV/);
      expect(header, s.name).toMatch(/returns/);
    }
  });

  it("the SHA we call EVALSHA with is the one the real Redis computes on SCRIPT LOAD", async () => {
    for (const s of allScripts) {
      expect(await redis.scriptLoad(s.source), s.name).toBe(s.sha);
      expect(createHash("sha1").update(s.source).digest("hex")).toBe(s.sha);
    }
  });

  it("falls back to EVAL when Redis has no cached script (NOSCRIPT)", async () => {
    const script = { name: "probe.lua", source: `return "${crypto.randomUUID()}"`, sha: "" };
    script.sha = createHash("sha1").update(script.source).digest("hex");
    expect(await runScript(redis, script, [], [])).toBe(script.source.slice(8, -1));
    // Now cached: EVALSHA alone must work.
    expect(await redis.evalsha(script.sha, [], [])).toBe(script.source.slice(8, -1));
  });
});
