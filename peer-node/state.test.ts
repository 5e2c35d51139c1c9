import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readState, writeState } from "./src/state.ts";

const dir = mkdtempSync(join(tmpdir(), "peer-state-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const state = { deviceId: "agent_0123456789abcdef", refreshToken: "rt-secret", relay: "ws://127.0.0.1:1" };

describe("peer state file", () => {
  it("is written with mode 0600, in a directory it creates, and reads back", () => {
    const path = join(dir, "nested", "deeper", "state.json");
    writeState(path, state);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readState(path)).toEqual(state);
  });

  it("replaces the file by rename: a new inode, mode 0600 even over a 0644 file, no temp files left", () => {
    const path = join(dir, "replace.json");
    writeFileSync(path, "{}");
    chmodSync(path, 0o644);
    const before = statSync(path).ino;
    writeState(path, { ...state, refreshToken: "rt-2" });
    expect(statSync(path).ino).not.toBe(before);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readState(path)?.refreshToken).toBe("rt-2");
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("a write that fails midway leaves the previous state intact and no temp file", () => {
    const path = join(dir, "intact.json");
    writeState(path, state);
    const poisoned = {
      ...state,
      toJSON() {
        throw new Error("disk full (simulated)");
      },
    };
    expect(() => writeState(path, poisoned)).toThrow(/disk full/);
    expect(readState(path)).toEqual(state);
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("a missing, torn or foreign file reads as no state (the peer then registers)", () => {
    expect(readState(join(dir, "missing.json"))).toBeUndefined();
    const torn = join(dir, "torn.json");
    writeFileSync(torn, '{"deviceId": "agent_');
    expect(readState(torn)).toBeUndefined();
    writeFileSync(torn, JSON.stringify({ deviceId: 1 }));
    expect(readState(torn)).toBeUndefined();
    expect(readFileSync(torn, "utf8")).toContain("deviceId");
  });
});
