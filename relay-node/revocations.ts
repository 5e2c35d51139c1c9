/**
 * How a relay learns that a device's tokens were revoked while its sockets are open: the API
 * publishes "<deviceId> <generation>" on keys.deviceRevokedChannel() (shared/lua/device_revoke.lua)
 * and every relay closes that device's older sockets with 4002 at once. Pub/sub drops messages
 * while a subscriber reconnects, so a sweep re-reads every held device's generation as a fallback.
 */
import { keys } from "../shared/keys.ts";
import type { TcpRedis } from "../shared/redis.node.ts";
import { revokeDeviceSockets } from "./peers.ts";
import type { RelayState } from "./state.ts";

/** A pub/sub subscription; resolves once subscribed, to a function that ends it. */
export interface RevocationFeed {
  subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>>;
}

/** The feed over a dedicated connection (a subscribed Redis connection can do nothing else). */
export function redisRevocationFeed(redis: TcpRedis): RevocationFeed {
  return {
    async subscribe(channel, onMessage) {
      const sub = redis.raw.duplicate();
      sub.on("error", () => {}); // reconnects by itself; the sweep covers the gap
      sub.on("message", (ch: string, message: string) => {
        if (ch === channel) onMessage(message);
      });
      await sub.subscribe(channel);
      return async () => {
        sub.disconnect();
      };
    },
  };
}

/** Applies one channel message; malformed ones are ignored. */
export function onRevocationMessage(state: RelayState, message: string) {
  const [deviceId, genText] = message.split(" ");
  const gen = Number(genText);
  if (!deviceId?.startsWith("agent_") || !Number.isInteger(gen)) return;
  revokeDeviceSockets(state, deviceId, gen);
}

/** Subscribes to the revocation channel; returns the stopper. */
export async function startRevocationListener(
  state: RelayState,
  feed: RevocationFeed,
): Promise<() => Promise<void>> {
  return feed.subscribe(keys.deviceRevokedChannel(), (m) => onRevocationMessage(state, m));
}

/** Devices whose generations one step of the sweep reads at once (pipelined on one connection). */
const SWEEP_BATCH = 500;

/** Re-reads the generation of every device this relay holds each `intervalMs`; returns a stopper. */
export function startGenerationSweep(state: RelayState, intervalMs: number): () => void {
  let running = false;
  const sweep = async () => {
    if (running) return;
    running = true;
    try {
      // In batches issued together, not one awaited round trip per device: the client pipelines
      // them into a few writes, where 2,000 devices one by one cost 2,000 writes and wake-ups every
      // sweep (idle CPU).
      const ids = [...state.devices.keys()];
      for (let i = 0; i < ids.length; i += SWEEP_BATCH) {
        const batch = ids.slice(i, i + SWEEP_BATCH);
        const gens = await Promise.all(batch.map((id) => state.redis.get(keys.deviceGen(id))));
        batch.forEach((id, j) => {
          const current = gens[j];
          if (current != null) revokeDeviceSockets(state, id, Number(current));
        });
      }
    } catch (err) {
      state.log.warn({ err: (err as Error).message }, "revocation sweep_failed");
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void sweep(), intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
