import { describe, expect, it } from "vitest";
import { Backoff, backoffDelay, DEFAULT_BACKOFF } from "./src/backoff.ts";

describe("reconnect backoff", () => {
  it("starts at 5 s plus 0-2 s jitter and doubles to a 120 s ceiling", () => {
    const min = [0, 1, 2, 3, 4, 5, 6, 10].map((n) => backoffDelay(DEFAULT_BACKOFF, n, 0));
    expect(min).toEqual([5_000, 10_000, 20_000, 40_000, 80_000, 120_000, 120_000, 120_000]);
    expect(backoffDelay(DEFAULT_BACKOFF, 0, 0.999_999)).toBe(7_000);
    expect(backoffDelay(DEFAULT_BACKOFF, 50, 0.5)).toBe(121_000);
  });

  it("counts attempts per socket and resets after a connection that stayed up a minute", () => {
    const b = new Backoff(DEFAULT_BACKOFF, () => 0);
    expect([b.next(0), b.next(0), b.next(10_000), b.next(59_999)]).toEqual([5_000, 10_000, 20_000, 40_000]);
    expect(b.next(60_000)).toBe(5_000);
    expect(b.next(0)).toBe(10_000);
  });

  it("jitter spreads a fleet: 1000 draws cover the whole 0-2 s range", () => {
    const b = (r: number) => backoffDelay(DEFAULT_BACKOFF, 0, r);
    const draws = Array.from({ length: 1000 }, () => b(Math.random()));
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(5_000);
    expect(Math.max(...draws)).toBeLessThanOrEqual(7_000);
    expect(Math.max(...draws) - Math.min(...draws)).toBeGreaterThan(1_800);
  });

  it("uses configured base delays (tests run with milliseconds)", () => {
    const fast = { baseMs: 50, maxMs: 400, jitterMs: 0, stableMs: 1_000 };
    expect([0, 1, 2, 3, 4].map((n) => backoffDelay(fast, n, 0.7))).toEqual([50, 100, 200, 400, 400]);
  });
});
