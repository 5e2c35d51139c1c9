/**
 * What each production modem exit served, for its farmer's earnings (docs/adr/0017-modem-farmers.md).
 * Peers are counted by their relay; a modem has no relay, so the gateway that spliced the tunnel
 * counts it: bytes add up in memory per exit and are flushed every GATEWAY_FLUSH_MS into the same
 * cumulative hash a device has (bytes:dev:{modem_...}) by the same idempotent script, with the exit
 * marked in modems:unsettled for the API's earnings cron.
 */
import { keys } from "../shared/keys.ts";
import { runScript } from "../shared/lua/script.ts";
import { deviceBytesFlush } from "../shared/lua/scripts.gen.ts";
import type { RedisClient } from "../shared/redis.ts";

export interface ModemByteCounters {
  /** up = modem -> customer, down = customer -> modem */
  add(exitId: string, up: number, down: number): void;
  /** Writes what is pending; a failed write stays pending and is resent as it was (same seq). */
  flush(): Promise<void>;
  /** Stops the timer and flushes what is left. */
  stop(): Promise<void>;
}

export function startModemByteCounters(deps: {
  redis: Pick<RedisClient, "eval" | "evalsha">;
  flushMs: number;
}): ModemByteCounters {
  let pending = new Map<string, { up: number; down: number }>();
  const unacked = new Map<string, { seq: number; up: number; down: number }>();
  // One writer per gateway process; each flush of an exit carries an increasing seq, so a flush
  // whose answer was lost is resent and credited once (device_bytes_flush.lua).
  const writer = `gw_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  let seq = 0;
  let inFlight: Promise<void> = Promise.resolve();

  const flushOnce = async () => {
    const batch = pending;
    pending = new Map();
    for (const [id, c] of batch) {
      if (unacked.has(id)) pending.set(id, c);
      else unacked.set(id, { seq: ++seq, ...c });
    }
    await Promise.all(
      [...unacked].map(async ([id, c]) => {
        try {
          await runScript(
            deps.redis,
            deviceBytesFlush,
            [keys.deviceBytes(id), keys.servedModems(), keys.unsettledModems(), keys.deviceBytesFlushSeq(id)],
            [c.up, c.down, id, Date.now(), writer, c.seq],
          );
          unacked.delete(id);
        } catch {
          // kept and resent as is: they are the farmer's earnings
        }
      }),
    );
  };

  const counters: ModemByteCounters = {
    add(id, up, down) {
      const c = pending.get(id);
      if (c) {
        c.up += up;
        c.down += down;
      } else pending.set(id, { up, down });
    },
    flush() {
      inFlight = inFlight.then(flushOnce);
      return inFlight;
    },
    async stop() {
      clearInterval(timer);
      await counters.flush();
    },
  };
  const timer = setInterval(() => void counters.flush(), deps.flushMs);
  timer.unref();
  return counters;
}
