import { afterAll, describe, expect, it } from "vitest";
import { stateEnv } from "../test/helpers/env.ts";
import { startSharedClock } from "./clock.ts";
import { memoryLogger } from "./log.ts";
import { tcpRedis } from "./redis.node.ts";

const redis = tcpRedis(stateEnv().REDIS_URL);
afterAll(() => redis.close());

describe("the shared clock", () => {
  it("reads Redis's time on a host whose clock is 90 s behind, to within the round trip", async () => {
    const clock = await startSharedClock({
      serverTime: () => redis.time(),
      local: () => Date.now() - 90_000,
    });
    try {
      const before = await redis.time();
      const read = clock.now();
      const after = await redis.time();
      expect(Number.isInteger(read)).toBe(true);
      expect(read).toBeGreaterThanOrEqual(Math.floor(before) - 20);
      expect(read).toBeLessThanOrEqual(Math.ceil(after) + 20);
      expect(clock.offsetMs()).toBeGreaterThan(89_900);
      expect(clock.offsetMs()).toBeLessThan(90_100);
    } finally {
      clock.stop();
    }
  });

  it("starts on the host's clock when Redis does not answer, says so, and follows Redis once it does", async () => {
    const lines: string[] = [];
    let up = false;
    const clock = await startSharedClock({
      serverTime: async () => {
        if (!up) throw new Error("connection refused");
        return Date.now() + 30_000;
      },
      log: memoryLogger(lines),
    });
    try {
      expect(clock.offsetMs()).toBe(0);
      expect(lines.join("\n")).toMatch(/cannot read Redis.s clock/);
      expect(lines.join("\n")).toMatch(/connection refused/);
      up = true;
      await clock.sync();
      expect(clock.offsetMs()).toBeGreaterThan(29_990);
      expect(clock.offsetMs()).toBeLessThan(30_010);
      expect(lines.join("\n")).toMatch(/this host's clock is 30\.0 s behind Redis's/);
    } finally {
      clock.stop();
    }
  });
});
