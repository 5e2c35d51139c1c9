/**
 * Redis's clock, read locally.
 *
 * Processes on different hosts meet in Redis through deadlines: a gateway's hold on an exit and its
 * tunnels' byte leases expire at a time, a credential expires at a time, a relay's devices stay
 * online until a time. Any process's script sweeps what has passed. If each stamps and sweeps by its
 * own host's clock, one host whose clock runs a minute fast sweeps every other gateway's live holds
 * (their tunnels close) and leases (their unspent budget is handed out twice, past the customer's
 * cap), and one that runs slow honours expired credentials. So long-lived processes stamp shared
 * deadlines with Redis's clock instead: they measure its offset from their own with TIME (the
 * sample with the shortest round trip of a few, offset taken at the round trip's midpoint), and
 * measure again every minute so drift stays small. Reading the clock costs no round trip.
 *
 * The scripts still take the time as an argument (Upstash asks scripts to be deterministic, and
 * tests move the clock), so one clock for everyone is the callers' job: this one.
 */
import type { Logger } from "./log.ts";

export interface SharedClock {
  /** Redis's time now, in whole ms since the epoch, as this host estimates it. */
  now(): number;
  /** Redis's clock minus this host's, in ms, as last measured. */
  offsetMs(): number;
  /** Measures the offset again now (also done every `resyncMs`). */
  sync(): Promise<void>;
  stop(): void;
}

export interface SharedClockOptions {
  /** Redis's TIME in ms (RedisClient.time). */
  serverTime: () => Promise<number>;
  /** This host's clock (default Date.now). */
  local?: () => number;
  /** How often the offset is measured again (default one minute). */
  resyncMs?: number;
  /** Round trips per measurement; the shortest wins (default 3). */
  samples?: number;
  /** Warns when the host is this far off Redis (default one second). */
  warnMs?: number;
  log?: Logger;
}

/**
 * A clock that follows Redis's. Resolves after the first measurement; if Redis does not answer, it
 * starts at the host's own time (offset 0), says so, and measures again at the next resync.
 */
export async function startSharedClock(opts: SharedClockOptions): Promise<SharedClock> {
  const local = opts.local ?? Date.now;
  const samples = opts.samples ?? 3;
  const warnMs = opts.warnMs ?? 1000;
  let offset = 0;
  let warned: number | undefined;

  const measure = async (): Promise<number> => {
    let best: { rtt: number; offset: number } | undefined;
    for (let i = 0; i < samples; i++) {
      const sent = local();
      const server = await opts.serverTime();
      const back = local();
      const rtt = back - sent;
      if (!best || rtt < best.rtt) best = { rtt, offset: server - (sent + back) / 2 };
    }
    return Math.round(best?.offset ?? 0);
  };

  const sync = async () => {
    try {
      offset = await measure();
    } catch (err) {
      opts.log?.warn(
        { err: (err as Error).message, offsetMs: offset },
        "cannot read Redis's clock; shared deadlines keep the last measured offset",
      );
      return;
    }
    // Says so once when the host turns out to be off, and again only when that changes by a second.
    if (Math.abs(offset) >= warnMs && (warned === undefined || Math.abs(offset - warned) >= 1000)) {
      warned = offset;
      opts.log?.warn(
        { offsetMs: offset },
        `this host's clock is ${(Math.abs(offset) / 1000).toFixed(1)} s ${offset < 0 ? "ahead of" : "behind"} Redis's; holds, byte leases, expiries and presence use Redis's clock`,
      );
    } else if (Math.abs(offset) < warnMs) warned = undefined;
  };

  await sync();
  const timer = setInterval(() => void sync(), opts.resyncMs ?? 60_000);
  timer.unref();
  return {
    now: () => Math.round(local() + offset),
    offsetMs: () => offset,
    sync,
    stop: () => clearInterval(timer),
  };
}

/** A clock that is exactly `now` (tests that move time, and scripts' callers with no Redis). */
export function fixedClock(now: () => number): SharedClock {
  return { now, offsetMs: () => 0, sync: async () => {}, stop: () => {} };
}
