/**
 * An account's devices as their owner sees them: registered (Postgres), online (the relay's
 * presence), verified and speed tier and last probe (the prober's probe hash), listed for sale (the
 * endpoint's listing), and bytes served (the earnings ledger, through earningsSummary). Read-only.
 */
import type { Queryable } from "../../../shared/db/pool.ts";
import { keys } from "../../../shared/keys.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { earningsSummary } from "./earnings.ts";

export interface SupplierDevice {
  deviceId: string;
  name: string;
  ipType: string;
  online: boolean;
  country: string | null;
  verified: boolean;
  listed: boolean;
  /** fast, medium, slow or unknown (never probed, or no pass yet) */
  speedTier: string;
  /** "ok" or the prober's failure code (prober/README.md), null before the first probe */
  lastProbe: { result: string; at: Date } | null;
  /** set when the circuit breaker paused the device: why */
  pausedReason: string | null;
  /** customer bytes served and accrued, both directions */
  bytesServed: bigint;
  registeredAt: Date;
}

/** The devices shown per account; a farm with more sees the newest ones (the JSON APIs page). */
export const DEVICES_SHOWN = 200;

export async function listSupplierDevices(
  deps: { db: Queryable; redis: Pick<RedisClient, "hgetall"> },
  accountId: string,
  now: Date,
): Promise<SupplierDevice[]> {
  const [{ rows }, earnings] = await Promise.all([
    deps.db.query<{ id: string; name: string; ip_type: string; created_at: string | Date }>(
      `SELECT id, name, ip_type, created_at FROM devices WHERE account_id = $1
        ORDER BY created_at DESC, id LIMIT $2`,
      [accountId, DEVICES_SHOWN],
    ),
    earningsSummary(deps.db, accountId, { now, days: 1, limit: 1000 }),
  ]);
  const served = new Map(earnings.devices.map((d) => [d.deviceId, d.bytes]));
  return Promise.all(
    rows.map(async (r): Promise<SupplierDevice> => {
      const [presence, probe, endpoint] = await Promise.all([
        deps.redis.hgetall(keys.presence(r.id)),
        deps.redis.hgetall(keys.probe(r.id)),
        deps.redis.hgetall(keys.endpoint(r.id)),
      ]);
      const lastAt = Number(probe.lastProbeAt);
      return {
        deviceId: r.id,
        name: r.name,
        ipType: presence.ipType || r.ip_type,
        // The presence hash expires ~30 s after the relay's last refresh: present means connected.
        online: Boolean(presence.relayId),
        country: presence.country || null,
        verified: probe.verified === "1",
        listed: endpoint.listed === "1",
        speedTier: probe.speedTier || "unknown",
        lastProbe: probe.lastResult && lastAt ? { result: probe.lastResult, at: new Date(lastAt) } : null,
        pausedReason: probe.paused === "1" ? probe.pausedReason || "paused" : null,
        bytesServed: served.get(r.id) ?? 0n,
        registeredAt: new Date(r.created_at),
      };
    }),
  );
}
