import { keys } from "../shared/keys.ts";
import type { Logger } from "../shared/log.ts";
import { runScript } from "../shared/lua/script.ts";
import { deviceBytesFlush } from "../shared/lua/scripts.gen.ts";
import type { RelayRedis } from "./state.ts";

/** Per-device traffic since the last flush; "up" = peer -> customer, "down" = customer -> peer. */
export interface ByteCounters {
  add(deviceId: string, up: number, down: number): void;
  /** Writes everything pending to Redis; on failure the counts stay pending for the next flush. */
  flush(): Promise<void>;
  start(): void;
  /** Stops the timer and flushes what is left. */
  stop(): Promise<void>;
  /** Age in ms of the oldest counted byte not yet acknowledged by Redis (0 when all are written). */
  lagMs(): number;
}

export function createByteCounters(deps: {
  redis: Pick<RelayRedis, "eval" | "evalsha">;
  flushMs: number;
  log: Logger;
  /** Called with each flush's duration in seconds (the relay's flush histogram). */
  onFlush?: (seconds: number) => void;
  /**
   * Redis's clock as this host reads it (shared/clock.ts; default the host's): it stamps a
   * device's counters' `since`, which the API's settlement reads on another host.
   */
  sharedNow?: () => number;
}): ByteCounters {
  const sharedNow = deps.sharedNow ?? Date.now;
  let pending = new Map<string, { up: number; down: number }>();
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> = Promise.resolve();
  // Idempotent flushes: every flush of a device carries this process's id and an increasing seq.
  // A failed one is resent as it was (same seq, same bytes) before any newer bytes of that device,
  // so an attempt that landed although its answer was lost is not credited twice.
  const writer = `relay_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  let seq = 0;
  const unacked = new Map<string, { seq: number; up: number; down: number }>();
  // Flush lag: when the oldest byte still pending (or sent but unacknowledged) was counted.
  let pendingSince = 0;
  let unackedSince = 0;

  const flushOnce = async () => {
    if (pending.size === 0 && unacked.size === 0) return;
    const started = performance.now();
    const batch = pending;
    pending = new Map();
    if (pendingSince && (!unackedSince || pendingSince < unackedSince)) unackedSince = pendingSince;
    pendingSince = 0;
    for (const [deviceId, c] of batch) {
      if (unacked.has(deviceId)) pending.set(deviceId, c);
      else unacked.set(deviceId, { seq: ++seq, ...c });
    }
    await Promise.all(
      [...unacked].map(async ([deviceId, c]) => {
        try {
          await runScript(
            deps.redis,
            deviceBytesFlush,
            [
              keys.deviceBytes(deviceId),
              keys.servedDevices(),
              keys.unsettledDevices(),
              keys.deviceBytesFlushSeq(deviceId),
            ],
            [c.up, c.down, deviceId, sharedNow(), writer, c.seq],
          );
          unacked.delete(deviceId);
        } catch (err) {
          // Kept (unacked) and resent as is: they are the supplier's earnings.
          deps.log.warn({ deviceId, err: (err as Error).message }, "counters flush_failed");
        }
      }),
    );
    if (unacked.size === 0) unackedSince = 0;
    deps.onFlush?.((performance.now() - started) / 1000);
  };

  const counters: ByteCounters = {
    add(deviceId, up, down) {
      if (pendingSince === 0) pendingSince = Date.now();
      const c = pending.get(deviceId);
      if (c) {
        c.up += up;
        c.down += down;
      } else pending.set(deviceId, { up, down });
    },
    flush() {
      // Serialised so two flushes never race on the same batch.
      inFlight = inFlight.then(flushOnce);
      return inFlight;
    },
    start() {
      timer = setInterval(() => void counters.flush(), deps.flushMs);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      await counters.flush();
    },
    lagMs() {
      const oldest = Math.min(
        pendingSince || Number.POSITIVE_INFINITY,
        unackedSince || Number.POSITIVE_INFINITY,
      );
      return Number.isFinite(oldest) ? Date.now() - oldest : 0;
    },
  };
  return counters;
}
