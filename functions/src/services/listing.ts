import type { Queryable } from "../../../shared/db/pool.ts";
import { keys } from "../../../shared/keys.ts";
import { runScript } from "../../../shared/lua/script.ts";
import { poolMembers, poolSnapshot } from "../../../shared/lua/scripts.gen.ts";
import {
  applyListings,
  type EndpointListing,
  type ListingChange,
  type SpeedTier,
} from "../../../shared/pool.ts";
import type { RedisClient } from "../../../shared/redis.ts";

/** Presence older than this means offline (the relay refreshes every 10 s, TTL 30 s). */
export const PRESENCE_FRESH_MS = 30_000;

export interface SnapshotEntry {
  endpointId: string;
  online: boolean;
  listed: boolean;
  presence: Record<string, string>;
  probe: Record<string, string>;
  endpoint: Record<string, string>;
  /** the key renting the endpoint as a dedicated port (ep:{id}:reserved); absent when shared */
  reservedFor?: string;
}

function pairs(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

/** Endpoints per pool_snapshot.lua call: a few milliseconds of Redis each (about 0.1 ms per endpoint). */
export const SNAPSHOT_BATCH = 250;

/**
 * Presence, probe state and listing of every endpoint that is online or listed: the ids in one
 * call (shared/lua/pool_members.lua), then each endpoint read whole, SNAPSHOT_BATCH per call
 * (pool_snapshot.lua). Endpoints are consistent one by one, not with each other: a flip between
 * two batches shows in the next run, as one between two runs would.
 */
export async function readPoolSnapshot(
  redis: Pick<RedisClient, "eval" | "evalsha">,
  nowMs: number,
): Promise<SnapshotEntry[]> {
  const keysOf = [keys.onlineDevices(), keys.poolListed()];
  const bound = nowMs - PRESENCE_FRESH_MS;
  const [online, listed] = (await runScript(redis, poolMembers, keysOf, [bound])) as [string[], string[]];
  const ids = [...new Set([...online, ...listed])];
  const out: SnapshotEntry[] = [];
  for (let i = 0; i < ids.length; i += SNAPSHOT_BATCH) {
    const rows = (await runScript(redis, poolSnapshot, keysOf, [
      bound,
      ...ids.slice(i, i + SNAPSHOT_BATCH),
    ])) as unknown[][];
    for (const r of rows)
      out.push({
        endpointId: String(r[0]),
        online: Number(r[1]) === 1,
        listed: Number(r[2]) === 1,
        presence: pairs(r[3]),
        probe: pairs(r[4]),
        endpoint: pairs(r[5]),
        ...(r[6] ? { reservedFor: String(r[6]) } : {}),
      });
  }
  return out;
}

const TIER_RANK: Record<SpeedTier, number> = { unknown: 0, slow: 1, medium: 2, fast: 3 };

export type ListingDecision =
  | { action: "list"; listing: EndpointListing; reason: string; flip: boolean }
  | { action: "delist"; reason: string }
  | { action: "none" };

function asTier(t: string | undefined): SpeedTier {
  return t === "fast" || t === "medium" || t === "slow" ? t : "unknown";
}

/**
 * The listing rule, in pure code: an online device is for sale when the prober verified it (two
 * clean passes), the circuit breaker has not paused it, and it is at least `minTier` fast.
 * Modems have no presence: the cron only pulls them when their probes fail; listing is the admin's.
 */
export function decideListing(e: SnapshotEntry, minTier: SpeedTier): ListingDecision {
  const tier = asTier(e.probe.speedTier);
  const isModem = e.endpoint.kind === "modem";
  const delist = (reason: string): ListingDecision =>
    e.listed ? { action: "delist", reason } : { action: "none" };
  if (e.probe.paused === "1")
    return delist(`circuit_breaker${e.probe.pausedReason ? `:${e.probe.pausedReason}` : ""}`);
  if (isModem) {
    return e.probe.verified === "0" && Number(e.probe.failStreak ?? 0) >= 3
      ? delist("probe_failures")
      : { action: "none" };
  }
  if (!e.online) return delist("offline");
  if (e.probe.verified !== "1") return delist("unverified");
  if (TIER_RANK[tier] < TIER_RANK[minTier]) return delist(`too_slow:${tier}`);
  const p = e.presence;
  if (!p.relayInternal || !p.country) return delist("presence_incomplete");
  const ipType = p.ipType === "mobile" || p.ipType === "datacenter" ? p.ipType : "residential";
  const listing: EndpointListing = {
    endpointId: e.endpointId,
    pool: "peer",
    country: p.country.toLowerCase(),
    ipType,
    speedTier: tier,
    kind: "peer",
    carrier: p.carrier || undefined,
    relayInternal: p.relayInternal,
    deviceId: e.endpointId,
  };
  // Re-listing an already listed endpoint refreshes its relay/tier (a device may have moved relays).
  return { action: "list", listing, reason: "verified", flip: !e.listed };
}

export interface ListingRun {
  considered: number;
  listed: number;
  delisted: number;
  flips: { endpointId: string; action: "list" | "delist"; reason: string }[];
}

/** Applies the listing rule to the whole pool and audits every flip with its reason. */
export async function reconcileListings(
  deps: { redis: RedisClient; db: Queryable },
  nowMs: number,
  minTier: SpeedTier,
): Promise<ListingRun> {
  const snapshot = await readPoolSnapshot(deps.redis, nowMs);
  const run: ListingRun = { considered: snapshot.length, listed: 0, delisted: 0, flips: [] };
  const verifiedIds: string[] = [];
  // Devices an operator or the ops agent delisted (ADR 0018) stay off sale until relisted.
  const held = await deps.redis.hgetall(keys.opsDelisted());
  const changes: ListingChange[] = [];
  for (const e of snapshot) {
    if (e.probe.verified === "1" && e.endpoint.kind !== "modem") verifiedIds.push(e.endpointId);
    const d: ListingDecision =
      held[e.endpointId] !== undefined
        ? e.listed
          ? { action: "delist", reason: "ops_delisted" }
          : { action: "none" }
        : decideListing(e, minTier);
    if (d.action === "list") {
      changes.push({ action: "list", listing: d.listing });
      if (d.flip) {
        run.listed++;
        run.flips.push({ endpointId: e.endpointId, action: "list", reason: d.reason });
      }
    } else if (d.action === "delist") {
      changes.push({ action: "delist", endpointId: e.endpointId });
      run.delisted++;
      run.flips.push({ endpointId: e.endpointId, action: "delist", reason: d.reason });
    }
  }
  // A batch per round trip: one round trip per endpoint took ~4 s a run at 2,000 endpoints.
  await applyListings(deps.redis, changes);
  if (run.flips.length) {
    await deps.db.query(
      `INSERT INTO audit_log (actor, action, subject, detail)
       SELECT 'cron:listing', 'listing.' || a, s, jsonb_build_object('reason', r)
       FROM unnest($1::text[], $2::text[], $3::text[]) AS t(a, s, r)`,
      [run.flips.map((f) => f.action), run.flips.map((f) => f.endpointId), run.flips.map((f) => f.reason)],
    );
    const listed = run.flips.filter((f) => f.action === "list").map((f) => f.endpointId);
    const delisted = run.flips.filter((f) => f.action === "delist").map((f) => f.endpointId);
    await deps.db.query(
      `UPDATE devices SET listed_for_sale = (id = ANY($1::text[])) WHERE id = ANY($1::text[]) OR id = ANY($2::text[])`,
      [listed, delisted],
    );
  }
  if (verifiedIds.length) {
    // Verification ends the unproven state (registration's anti-flood guard).
    await deps.db.query(
      "UPDATE devices SET verified_at = now() WHERE id = ANY($1::text[]) AND verified_at IS NULL",
      [verifiedIds],
    );
  }
  return run;
}
