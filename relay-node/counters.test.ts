// Device byte counters credit a retried flush once (issue 16 item 8): a flush whose write landed
// but whose answer was lost is resent with the same sequence number and Redis applies it once.
import { afterAll, describe, expect, it } from "vitest";
import { keys } from "../shared/keys.ts";
import { memoryLogger } from "../shared/log.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { createByteCounters } from "./counters.ts";

const redis = tcpRedis(stateEnv().REDIS_URL);
afterAll(() => redis.close());

describe("device byte counters", () => {
  it("a flush whose answer was lost is resent and credited once; later bytes still count; the flush lag covers unacknowledged bytes", async () => {
    const deviceId = `agent_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    let loseAnswers = 1;
    const lossy = {
      evalsha: async (...a: Parameters<typeof redis.evalsha>) => {
        const r = await redis.evalsha(...a);
        if (loseAnswers-- > 0) throw new Error("connection reset after the command");
        return r;
      },
      eval: async (...a: Parameters<typeof redis.eval>) => {
        const r = await redis.eval(...a);
        if (loseAnswers-- > 0) throw new Error("connection reset after the command");
        return r;
      },
    };
    const logs: string[] = [];
    const flushes: number[] = [];
    const counters = createByteCounters({
      redis: lossy,
      flushMs: 60_000,
      log: memoryLogger(logs),
      onFlush: (s) => flushes.push(s),
    });
    try {
      counters.add(deviceId, 1000, 200);
      // A timer may fire a millisecond early by Date.now(): wait past the 20 ms the checks need.
      await new Promise((r) => setTimeout(r, 30));
      expect(counters.lagMs()).toBeGreaterThanOrEqual(20); // counted, not yet in Redis
      await counters.flush(); // lands, answer lost
      expect(counters.lagMs()).toBeGreaterThanOrEqual(20); // unacknowledged: still lagging
      counters.add(deviceId, 10, 1);
      await counters.flush(); // resends the first flush (same seq): no second credit
      await counters.flush(); // then the newer bytes
      expect(counters.lagMs()).toBe(0);
      expect(flushes.length).toBeGreaterThanOrEqual(3);
      expect(logs.some((l) => l.includes("flush_failed"))).toBe(true);
      const h = await redis.hgetall(keys.deviceBytes(deviceId));
      expect({ up: h.up, down: h.down }).toEqual({ up: "1010", down: "201" });
    } finally {
      await redis.del(keys.deviceBytes(deviceId), keys.deviceBytesFlushSeq(deviceId));
      await redis.raw.srem(keys.servedDevices(), deviceId);
      await redis.raw.srem(keys.unsettledDevices(), deviceId);
    }
  });

  it("stamps a device's counters' since with Redis's clock, not the host's", async () => {
    const deviceId = `dev_since_${crypto.randomUUID().slice(0, 8)}`;
    // On a host two hours fast, Redis's clock reads two hours behind the host's.
    const twoHoursAgo = Date.now() - 2 * 3600_000;
    const counters = createByteCounters({
      redis,
      flushMs: 60_000,
      log: memoryLogger([]),
      sharedNow: () => twoHoursAgo,
    });
    try {
      counters.add(deviceId, 5, 5);
      await counters.flush();
      expect(await redis.raw.hget(keys.deviceBytes(deviceId), "since")).toBe(String(twoHoursAgo));
    } finally {
      await redis.del(keys.deviceBytes(deviceId), keys.deviceBytesFlushSeq(deviceId));
      await redis.raw.srem(keys.servedDevices(), deviceId);
      await redis.raw.srem(keys.unsettledDevices(), deviceId);
    }
  });
});
