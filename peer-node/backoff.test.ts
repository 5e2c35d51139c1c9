import { describe, expect, it } from "vitest";
import { Backoff, backoffDelay, DEFAULT_BACKOFF, jitterWindow } from "./src/backoff.ts";

describe("reconnect backoff", () => {
  it("starts at 5 s plus 0-2 s jitter and doubles to a 120 s ceiling", () => {
    const min = [0, 1, 2, 3, 4, 5, 6, 10].map((n) => backoffDelay(DEFAULT_BACKOFF, n, 0));
    expect(min).toEqual([5_000, 10_000, 20_000, 40_000, 80_000, 120_000, 120_000, 120_000]);
    expect(backoffDelay(DEFAULT_BACKOFF, 0, 0.999_999)).toBe(7_000);
    expect(backoffDelay(DEFAULT_BACKOFF, 50, 0.5)).toBe(150_000);
  });

  it("jitter grows with the delay: 0-2 s on the first reconnect, then up to half the doubled delay", () => {
    const windows = [0, 1, 2, 3, 4, 5, 9].map((n) => jitterWindow(DEFAULT_BACKOFF, n));
    expect(windows).toEqual([2_000, 5_000, 10_000, 20_000, 40_000, 60_000, 60_000]);
    const top = [0, 1, 2, 5].map((n) => backoffDelay(DEFAULT_BACKOFF, n, 0.999_999));
    expect(top).toEqual([7_000, 15_000, 30_000, 180_000]);
    // The jitter never drops below the configured floor, even for a tiny base.
    expect(jitterWindow({ baseMs: 100, maxMs: 2_400, jitterMs: 1_000, stableMs: 1 }, 1)).toBe(1_000);
  });

  it("a fleet whose relay stayed down spreads its later reconnects: at most 1 in 5 sockets in any 2 s", () => {
    // 200,000 sockets on their third attempt (20 s + jitter): with the old fixed 0-2 s jitter all
    // of them would land inside one 2 s window.
    const draws = Array.from({ length: 200_000 }, () => backoffDelay(DEFAULT_BACKOFF, 2, Math.random()));
    const perWindow = new Map<number, number>();
    for (const d of draws)
      perWindow.set(Math.floor(d / 2_000), (perWindow.get(Math.floor(d / 2_000)) ?? 0) + 1);
    expect(Math.max(...perWindow.values())).toBeLessThan(200_000 / 5 + 2_000);
    expect(draws.reduce((a, b) => Math.min(a, b))).toBeGreaterThanOrEqual(20_000);
    expect(draws.reduce((a, b) => Math.max(a, b))).toBeLessThanOrEqual(30_000);
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
    expect([0, 1, 2, 3, 4].map((n) => backoffDelay(fast, n, 0))).toEqual([50, 100, 200, 400, 400]);
    expect([0, 1, 2, 3, 4].map((n) => backoffDelay(fast, n, 0.5))).toEqual([50, 125, 250, 500, 500]);
  });
});
