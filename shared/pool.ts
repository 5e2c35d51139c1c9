/**
 * The endpoint pool in Redis and atomic selection over it (shared/lua/select_endpoint.lua).
 * Listing and delisting are called by the cron (verified, healthy devices) and the local stack
 * (modems); the gateway selects, renews and releases holds.
 */
import type { IpType, Rotation } from "./dsl.ts";
import { rotationMinutes } from "./dsl.ts";
import { keys } from "./keys.ts";
import { runScript } from "./lua/script.ts";
import {
  endpointsFree,
  listEndpoint as listScript,
  releaseHold as releaseScript,
  reserveEndpoint as reserveScript,
  selectEndpoint as selectScript,
} from "./lua/scripts.gen.ts";
import type { RedisClient } from "./redis.ts";

export type SpeedTier = "fast" | "medium" | "slow" | "unknown";
/** peer: a community device behind a relay; modem: a production modem's upstream HTTP proxy port */
export type ExitKind = "peer" | "modem";
export type EndpointPool = "mbl" | "peer";

/** Caps per endpoint, so a slow exit cannot be oversubscribed (seed 4.1). */
export const CAPS: Record<SpeedTier | "modem", { conns: number; customers: number }> = {
  fast: { conns: 4, customers: 2 },
  medium: { conns: 3, customers: 1 },
  slow: { conns: 2, customers: 1 },
  unknown: { conns: 2, customers: 1 },
  modem: { conns: 6, customers: 3 },
};

export function capsFor(kind: ExitKind, speedTier: SpeedTier): { conns: number; customers: number } {
  return kind === "modem" ? CAPS.modem : CAPS[speedTier];
}

export interface EndpointListing {
  endpointId: string;
  pool: EndpointPool;
  /** ISO-2 lowercase */
  country: string;
  ipType: IpType;
  speedTier: SpeedTier;
  kind: ExitKind;
  carrier?: string;
  city?: string;
  /** peer exits: the relay's internal URL (http://host:port) and the device on it */
  relayInternal?: string;
  deviceId?: string;
  /** modem exits: the modem's upstream HTTP proxy */
  host?: string;
  port?: number;
  /** modem exits: its upstream proxy credentials, sealed (shared/upstream-auth.ts); never in the clear */
  upstreamAuth?: string;
}

/** What the gateway needs to open the exit, as read atomically with the hold. */
export interface SelectedEndpoint extends EndpointListing {
  conns: number;
  custs: number;
}

export interface Hold {
  holdId: string;
  keyId: string;
  /** the pool:holds member ("holdId|endpointId|keyId") */
  member: string;
  endpointId: string;
  /** the holds zset this hold lives in (keys.poolHolds() outside tests) */
  holdsKey: string;
}

export interface SelectInput {
  /** the credential: caps count distinct keys as customers */
  keyId: string;
  pool: "mbl" | "peer" | "any";
  country: string;
  ipType?: IpType;
  carrier?: string;
  city?: string;
  sid?: string;
  rot?: Rotation;
  ttlSec?: number;
  /** credential connection limit, 0 = none */
  maxConnections: number;
  now: number;
  leaseMs: number;
  /** [0,1) for the tiebreak; injectable so tests can pin it */
  random?: number;
  holdId?: string;
  /** endpoints to skip (exits that already failed for this request) */
  exclude?: string[];
  /**
   * A dedicated credential's endpoint: selects exactly this one, and only while it is reserved for
   * `keyId` (reserveEndpoint); pool, country, session and preferences are not consulted.
   */
  endpointId?: string;
  /**
   * The username's pin-device: exactly this device (a listed peer in `pool`), or an error naming its
   * state (unknown, offline, not listed, busy); never another device.
   */
  pinDevice?: string;
  /**
   * Test seam: a private holds zset. Every pool script sweeps the holds zset by `now`, so a test
   * that moves its clock hours ahead must not share the real one with tests running beside it.
   */
  holdsKey?: string;
}

export type SelectResult =
  | { ok: true; endpoint: SelectedEndpoint; hold: Hold; moved: boolean }
  | {
      ok: false;
      code: "E_NO_STOCK" | "E_NO_CAPACITY" | "E_SESSION_PEER_GONE" | "E_RATE_LIMITED";
      message: string;
    };

/** Default session life when the username gives a sid but no ttl. */
export const DEFAULT_SESSION_TTL_SEC = 3600;
const PAGE = 32;

type PoolRedis = Pick<RedisClient, "evalsha" | "eval">;

function dslName(name: string | undefined): string {
  return (name ?? "")
    .toLowerCase()
    .replace(/[^a-z0-9_.]+/g, "_")
    .slice(0, 64);
}

/** What list_endpoint.lua stores for a listed endpoint: flat field, value pairs. */
function listingFields(e: EndpointListing): string[] {
  const caps = capsFor(e.kind, e.speedTier);
  const fields: Record<string, string> = {
    pool: e.pool,
    country: e.country.toLowerCase(),
    ipType: e.ipType,
    speedTier: e.speedTier,
    kind: e.kind,
    // The username DSL cannot carry hyphens or spaces: store names the way a customer can type them.
    carrier: dslName(e.carrier),
    city: dslName(e.city),
    relayInternal: e.relayInternal ?? "",
    deviceId: e.deviceId ?? "",
    host: e.host ?? "",
    port: e.port === undefined ? "" : String(e.port),
    upstreamAuth: e.upstreamAuth ?? "",
    maxConns: String(caps.conns),
    maxCusts: String(caps.customers),
  };
  return Object.entries(fields).flat();
}

/** One endpoint put up for sale (or its listing refreshed), or taken off sale. */
export type ListingChange =
  | { action: "list"; listing: EndpointListing }
  | { action: "delist"; endpointId: string };

/**
 * Endpoints per list_endpoint.lua call. Redis serves no one else while a script runs: at 100 a call
 * held it 3-10 ms (delist to relist, ~45 commands an endpoint; INFO commandstats, redis 7.0 on a
 * busy 2-core machine), at 250 7-14 ms. A 2,000-endpoint cron run is 20 round trips instead of 2,000.
 */
export const LISTING_BATCH = 100;

/**
 * Applies listing changes, each exactly as listEndpoint or delistEndpoint would, in order and
 * LISTING_BATCH to a round trip. Not atomic across batches (nor was one call per endpoint).
 */
export async function applyListings(redis: PoolRedis, changes: ListingChange[]): Promise<void> {
  for (let i = 0; i < changes.length; i += LISTING_BATCH) {
    const batch = changes.slice(i, i + LISTING_BATCH);
    const ids = batch.map((c) => (c.action === "list" ? c.listing.endpointId : c.endpointId));
    const args: string[] = [];
    batch.forEach((c, j) => {
      const fields = c.action === "list" ? listingFields(c.listing) : [];
      args.push(ids[j]!, c.action, String(fields.length), ...fields);
    });
    await runScript(redis, listScript, [keys.poolListed(), ...ids.map((id) => keys.endpoint(id))], args);
  }
}

/** Puts an endpoint up for sale (or refreshes its listing); caps follow from kind and speed tier. */
export async function listEndpoint(redis: PoolRedis, e: EndpointListing): Promise<void> {
  await applyListings(redis, [{ action: "list", listing: e }]);
}

/** Takes an endpoint off sale; live tunnels keep their holds until they end or expire. */
export async function delistEndpoint(redis: PoolRedis, endpointId: string): Promise<void> {
  await applyListings(redis, [{ action: "delist", endpointId }]);
}

/** Atomically picks an endpoint (honouring caps, filters and the sid's session) and holds it. */
export async function selectEndpoint(redis: PoolRedis, input: SelectInput): Promise<SelectResult> {
  const holdId = input.holdId ?? `h_${crypto.randomUUID().replaceAll("-", "")}`;
  const rot = input.sid === undefined ? "" : (input.rot ?? "auto10");
  const rotMode = rot.startsWith("auto") ? "auto" : rot;
  const holdsKey = input.holdsKey ?? keys.poolHolds();
  const reply = (await runScript(
    redis,
    selectScript,
    [
      keys.poolIndex(input.pool, input.country, input.ipType ?? "any"),
      holdsKey,
      keys.credentialConns(input.keyId),
      input.sid === undefined ? keys.session(input.keyId, "-") : keys.session(input.keyId, input.sid),
      keys.poolFull(input.pool, input.country, input.ipType ?? "any"),
    ],
    [
      input.now,
      holdId,
      input.keyId,
      input.leaseMs,
      input.maxConnections,
      rotMode,
      rot === "" ? 0 : rotationMinutes(rot as Rotation) * 60_000,
      (input.ttlSec ?? DEFAULT_SESSION_TTL_SEC) * 1000,
      input.carrier ?? "",
      input.city ?? "",
      input.random ?? Math.random(),
      PAGE,
      (input.exclude ?? []).join(" "),
      input.endpointId ?? "",
      input.pinDevice ?? "",
      input.pool,
    ],
  )) as string[];
  if (reply[0] !== "ok") {
    return { ok: false, code: reply[1] as "E_NO_STOCK", message: String(reply[2]) };
  }
  const endpointId = String(reply[1]);
  const f: Record<string, string> = {};
  for (let i = 4; i + 1 < reply.length; i += 2) f[String(reply[i])] = String(reply[i + 1]);
  const endpoint: SelectedEndpoint = {
    endpointId,
    pool: f.pool as EndpointPool,
    country: f.country ?? "",
    ipType: f.ipType as IpType,
    speedTier: f.speedTier as SpeedTier,
    kind: f.kind as ExitKind,
    carrier: f.carrier || undefined,
    city: f.city || undefined,
    relayInternal: f.relayInternal || undefined,
    deviceId: f.deviceId || undefined,
    host: f.host || undefined,
    port: f.port ? Number(f.port) : undefined,
    upstreamAuth: f.upstreamAuth || undefined,
    conns: Number(f.conns ?? 0),
    custs: Number(f.custs ?? 0),
  };
  return {
    ok: true,
    endpoint,
    hold: { holdId, keyId: input.keyId, member: String(reply[2]), endpointId, holdsKey },
    moved: reply[3] === "1",
  };
}

/**
 * Extends a hold's lease; false when it had already expired (its capacity went back to the pool)
 * or its endpoint is now reserved for another credential (the hold is released: close the tunnel).
 */
export async function renewHold(
  redis: PoolRedis,
  hold: Hold,
  now: number,
  leaseMs: number,
): Promise<boolean> {
  const r = await runScript(
    redis,
    releaseScript,
    [hold.holdsKey, keys.credentialConns(hold.keyId)],
    ["renew", hold.member, hold.holdId, now, leaseMs],
  );
  return Number(r) === 1;
}

/** Gives a hold's capacity back at once; idempotent. */
export async function releaseHold(redis: PoolRedis, hold: Hold, now: number): Promise<boolean> {
  const r = await runScript(
    redis,
    releaseScript,
    [hold.holdsKey, keys.credentialConns(hold.keyId)],
    ["release", hold.member, hold.holdId, now, 0],
  );
  return Number(r) === 1;
}

/**
 * Rents an endpoint to one credential (a dedicated port): from now on it is in no shared index and
 * selects only for `keyId`; live holds of other keys end at their next renewal. Idempotent.
 */
export async function reserveEndpoint(redis: PoolRedis, endpointId: string, keyId: string): Promise<void> {
  await runScript(
    redis,
    reserveScript,
    [keys.endpointReservation(endpointId)],
    [endpointId, "reserve", keyId],
  );
}

/**
 * Ends a reservation and puts the endpoint back into the shared indexes (if it is still listed).
 * With `keyId` it only ends that key's reservation (false when another key holds it now).
 */
export async function releaseEndpoint(redis: PoolRedis, endpointId: string, keyId = ""): Promise<boolean> {
  const r = await runScript(
    redis,
    reserveScript,
    [keys.endpointReservation(endpointId)],
    [endpointId, "release", keyId],
  );
  return Number(r) === 1;
}

/** The subset of `endpointIds` that is listed (healthy, on sale) and not reserved, in one round trip. */
export async function freeEndpoints(redis: PoolRedis, endpointIds: readonly string[]): Promise<string[]> {
  if (endpointIds.length === 0) return [];
  const reply = (await runScript(redis, endpointsFree, endpointIds.map(keys.endpoint), [])) as unknown[];
  return endpointIds.filter((_, i) => Number(reply[i]) === 1);
}

/** Asks a session to move to another device on its next connection (rot=ondemand, or any mode). */
export async function rotateSession(
  redis: Pick<RedisClient, "hgetall" | "hset">,
  keyId: string,
  sid: string,
): Promise<boolean> {
  const key = keys.session(keyId, sid);
  const s = await redis.hgetall(key);
  if (!s.ep) return false;
  // rotateAt=1 is always in the past: the next selection treats the session as due to move.
  await redis.hset(key, { rotateAt: "1" });
  return true;
}

/**
 * The listing for a peer as its relay describes it in presence:{deviceId} (docs/internal.md). The
 * cron lists verified devices with their probed speed tier; the local stack lists its demo peers.
 */
export function peerListingFromPresence(
  deviceId: string,
  presence: Record<string, string>,
  speedTier: SpeedTier = "unknown",
): EndpointListing | undefined {
  if (!presence.relayInternal) return undefined;
  const ipType =
    (["mobile", "residential", "datacenter"] as const).find((t) => t === presence.ipType) ?? "residential";
  return {
    endpointId: deviceId,
    deviceId,
    pool: "peer",
    kind: "peer",
    country: (presence.country || "zz").toLowerCase(),
    ipType,
    carrier: presence.carrier || undefined,
    speedTier,
    relayInternal: presence.relayInternal,
  };
}
