import { keys } from "../shared/keys.ts";
import { runScript } from "../shared/lua/script.ts";
import { presenceKeepalive, presenceRefresh, presenceRemove, relayAlive } from "../shared/lua/scripts.gen.ts";
import { normaliseRelayUrl } from "../shared/relay-url.ts";
import type { Device, RelayState } from "./state.ts";

function presenceFields(state: RelayState, device: Device): string[] {
  const fields: Record<string, string> = {
    relayId: state.config.RELAY_ID,
    relayInternal: state.internalUrl,
    sockets: String(device.conns.size),
    ipType: device.ipType,
    country: device.country,
    carrier: device.carrier,
    accountId: device.accountId,
    connectedAt: String(device.connectedAt),
    sdkVersion: device.sdkVersion,
    protocol: device.protocol,
    capabilities: device.capabilities.join(","),
  };
  return Object.entries(fields).flat();
}

/** Writes the device's presence and pushes its TTL out; a no-op once the device left. */
export async function refreshPresence(state: RelayState, device: Device): Promise<void> {
  // Commands on one connection run in issue order, so a refresh never lands after the removal
  // that follows it, as long as the device is still ours when we issue it.
  if (state.devices.get(device.id) !== device) return;
  device.presenceStale = false;
  await runScript(
    state.redis,
    presenceRefresh,
    [keys.presence(device.id), keys.onlineDevices(), keys.endpoint(device.id)],
    [
      state.config.PRESENCE_TTL_SECONDS,
      state.sharedClock.now(),
      device.id,
      state.internalUrl,
      ...presenceFields(state, device),
    ],
  ).catch((err: unknown) => {
    // Written again in full at the next tick, not merely kept alive.
    device.presenceStale = true;
    throw err;
  });
}

/** Devices per presence_keepalive call: a few ms of Redis time per call at most. */
const KEEPALIVE_BATCH = 500;

/**
 * The periodic refresh of every device: their presence was written in full at their last change,
 * so a batch at a time only keeps it alive (presence_keepalive.lua); devices whose presence is gone
 * or names another relay, and those whose last full write failed, are written in full. At 16,000
 * devices this is 32 calls every 10 s instead of 16,000, and the relay stops turning over tens of
 * MB of command buffers a minute while idle.
 */
async function keepPresenceAlive(state: RelayState): Promise<void> {
  const whole: Device[] = [];
  const ids: string[] = [];
  for (const d of state.devices.values()) {
    if (d.presenceStale) whole.push(d);
    else ids.push(d.id);
  }
  const batches: Promise<unknown>[] = whole.map((d) => refreshPresence(state, d));
  for (let i = 0; i < ids.length; i += KEEPALIVE_BATCH) {
    batches.push(
      runScript(
        state.redis,
        presenceKeepalive,
        [keys.onlineDevices()],
        [
          state.config.PRESENCE_TTL_SECONDS,
          state.sharedClock.now(),
          state.config.RELAY_ID,
          state.internalUrl,
          ...ids.slice(i, i + KEEPALIVE_BATCH),
        ],
      ).then((rewrite) =>
        Promise.all(
          (rewrite as string[]).map((id) => {
            const d = state.devices.get(id);
            return d ? refreshPresence(state, d) : undefined;
          }),
        ),
      ),
    );
  }
  const failed = (await Promise.allSettled(batches)).filter((r) => r.status === "rejected");
  if (failed.length > 0) throw (failed[0] as PromiseRejectedResult).reason;
}

export async function removePresence(state: RelayState, deviceId: string): Promise<void> {
  await runScript(
    state.redis,
    presenceRemove,
    [keys.presence(deviceId), keys.onlineDevices()],
    [state.config.RELAY_ID, deviceId],
  );
}

/** Entries of relays silent this long are swept from the alive zset by any relay's refresh. */
const FORGET_DEAD_RELAY_MS = 24 * 3600 * 1000;

/**
 * Lists this relay's public URL as alive for three RELAY_ALIVE_REFRESH_MS (9 s; never past the
 * presence TTL), or unlists it while it drains or shuts down, so the API stops handing it out (and
 * sends failing devices elsewhere) at once. The entry has its own short cadence, apart from the
 * devices' 10 s presence, because a device's first failover check comes 15-22 s after a kill (its
 * second failed connect, docs/protocol.md): with a 20 s window that check mostly still named the
 * dead relay and the device waited 30 s more for the next (bench fault d, 47.8 s). One small write
 * every 3 s per relay; a relay whose event loop stalls for 6 s is briefly not handed out, which
 * costs only new placements.
 */
export async function refreshRelayAlive(state: RelayState): Promise<void> {
  const now = state.sharedClock.now();
  const window = Math.min(state.config.PRESENCE_TTL_SECONDS * 1000, 3 * state.config.RELAY_ALIVE_REFRESH_MS);
  const aliveUntil = state.draining ? 0 : now + window;
  await runScript(
    state.redis,
    relayAlive,
    [keys.relaysAlive()],
    [normaliseRelayUrl(state.publicUrl), aliveUntil, now - FORGET_DEAD_RELAY_MS],
  );
}

/** Writes the relay's own record and its alive entry; the shutdown path calls it once draining. */
export async function refreshRelayInfo(state: RelayState): Promise<void> {
  await Promise.all([writeRelayInfo(state), refreshRelayAlive(state)]);
}

async function writeRelayInfo(state: RelayState): Promise<void> {
  let sockets = 0;
  for (const d of state.devices.values()) sockets += d.conns.size;
  const key = keys.relayInfo(state.config.RELAY_ID);
  await state.redis.hset(key, {
    publicUrl: state.publicUrl,
    internalUrl: state.internalUrl,
    region: state.config.RELAY_REGION,
    devices: String(state.devices.size),
    sockets: String(sockets),
    draining: state.draining ? "1" : "0",
    updatedAt: String(state.sharedClock.now()),
  });
  await state.redis.expire(key, state.config.PRESENCE_TTL_SECONDS);
}

/**
 * Writes the device's presence after a change (a socket came or went, device_info arrived),
 * fire-and-forget: errors are logged, never fatal to the peer's socket. One write per device at a
 * time; changes made while it is in flight are written by one more write after it, which reads
 * the device as it is then. A fleet reconnecting after a relay restart (8 sockets, 8 device_info
 * per device) thus costs Redis about 2 writes per device instead of 16.
 */
export function touchPresence(state: RelayState, device: Device) {
  if (device.presenceWrite) {
    device.presenceWrite = "again";
    return;
  }
  device.presenceWrite = "busy";
  refreshPresence(state, device)
    .catch((err) =>
      state.log.warn({ deviceId: device.id, err: (err as Error).message }, "presence refresh_failed"),
    )
    .finally(() => {
      const again = device.presenceWrite === "again";
      device.presenceWrite = undefined;
      if (again) touchPresence(state, device);
    });
}

/**
 * Refreshes every device and the relay's own record each PRESENCE_REFRESH_MS, and the relay's alive
 * entry each RELAY_ALIVE_REFRESH_MS; returns a stopper.
 */
export function startPresenceLoop(state: RelayState): () => void {
  const tick = async () => {
    const results = await Promise.allSettled([writeRelayInfo(state), keepPresenceAlive(state)]);
    const failed = results.filter((r) => r.status === "rejected");
    // One line per tick, not one per device: a Redis outage must not flood the log.
    if (failed.length > 0) {
      const first = (failed[0] as PromiseRejectedResult).reason as Error;
      state.log.warn({ err: first?.message }, "presence refresh_failed");
    }
  };
  const alive = () =>
    refreshRelayAlive(state).catch((err) =>
      state.log.warn({ err: (err as Error).message }, "relay alive_refresh_failed"),
    );
  void tick();
  void alive();
  const timer = setInterval(() => void tick(), state.config.PRESENCE_REFRESH_MS);
  const aliveTimer = setInterval(alive, state.config.RELAY_ALIVE_REFRESH_MS);
  timer.unref();
  aliveTimer.unref();
  return () => {
    clearInterval(timer);
    clearInterval(aliveTimer);
  };
}
