import { classifyAsn, type IpClass } from "../../../shared/asn.ts";
import { type Queryable, withTransaction } from "../../../shared/db/pool.ts";
import { hashSecret, randomHex } from "../../../shared/ids.ts";
import { deriveDeviceId, PEER_TOKEN_TTL_SECONDS, type PeerClaims, signJwt } from "../../../shared/jwt.ts";
import { keys } from "../../../shared/keys.ts";
import { runScript } from "../../../shared/lua/script.ts";
import { deviceRevoke, relayPick } from "../../../shared/lua/scripts.gen.ts";
import type { RedisClient } from "../../../shared/redis.ts";
import { normaliseRelayUrl } from "../../../shared/relay-url.ts";
import type { Deps } from "../deps.ts";
import { authenticateApiKey, hasScope } from "./auth.ts";
import { earningsPerGB } from "./earnings.ts";
import { getSetting } from "./settings.ts";
import { sharedNow } from "./shared-clock.ts";

export const REFRESH_TOKEN_TTL_MS = 7 * 24 * 3600 * 1000;
const DEFAULT_LIMITS = { maxDevices: 200_000, maxUnproven: 20_000 };

export interface ClientInfo {
  ip: string;
  asn?: number;
  asOrganization?: string;
  country?: string;
}

export interface RegisterInput {
  apiKey: string;
  name: string;
  type: string;
  connectionMethod?: string;
  sdkVersion?: string;
  walletAddress?: string;
  country?: string;
  carrier?: string;
}

export interface Identity {
  deviceId: string;
  accountId: string;
  jwt: string;
  refreshToken: string;
  relay: string;
  ipType: IpClass;
  earningsPerGB: Record<IpClass, string>;
  expiresIn: number;
}

export type Failure = {
  ok: false;
  code: "E_UNAUTHORIZED" | "E_DEVICE_LIMIT" | "E_UNPROVEN_LIMIT" | "E_NOT_FOUND" | "E_SCOPE_REQUIRED";
  message: string;
  details?: Record<string, unknown>;
};

/** Devices register and mint tokens only with a `supply` key (ADR 0009). */
function supplyScopeMissing(route: string): Failure {
  return {
    ok: false,
    code: "E_SCOPE_REQUIRED",
    message: `this API key lacks the \`supply\` scope that ${route} needs`,
    details: { requiredScope: "supply" },
  };
}

export interface RelayRegions {
  default: string;
  regions: Record<string, { relayUrl: string; countries: string[] }>;
}

/**
 * The relay for a device (docs/adr/0023): the region whose country list has the device's own
 * country hint, else the one that has the country the edge saw, else the default region. The hint
 * goes first because a relay grants nothing (class and geo in the JWT come from the edge alone): a
 * device that states a wrong country only lands on a farther relay, and a fleet behind one egress
 * (a modem farm, a simulator) still spreads by the countries it declares.
 *
 * Of the regions in that order (then every other region) it returns the first whose relay is
 * listed alive in Redis (relays renew `relays:alive` every 3 s, entries run out 9 s after the
 * last renewal); when none is alive, or no relay ever reported (a fresh deploy), the preferred one.
 * One Redis round trip.
 */
export async function assignRelay(
  deps: Pick<Deps, "db" | "redis" | "now">,
  countries: { hint?: string | null; edge?: string },
): Promise<string> {
  const cfg = await getSetting<RelayRegions>(deps.db, "relay_regions", { default: "", regions: {} });
  return pickRelay(deps, cfg, countries);
}

/** assignRelay's choice for a given `relay_regions` value. */
export async function pickRelay(
  deps: Pick<Deps, "redis" | "now">,
  cfg: RelayRegions,
  countries: { hint?: string | null; edge?: string },
): Promise<string> {
  const regionOf = (country: string | null | undefined) => {
    const c = country?.toUpperCase();
    return c ? Object.values(cfg.regions).find((r) => r.countries.includes(c)) : undefined;
  };
  const preferred = [regionOf(countries.hint), regionOf(countries.edge), cfg.regions[cfg.default]];
  const ordered = [...new Set([...preferred, ...Object.values(cfg.regions)].filter((r) => r !== undefined))];
  const first = preferred.find((r) => r !== undefined);
  if (!first) throw new Error("settings.relay_regions has no default region");
  const urls = [...new Set(ordered.map((r) => r.relayUrl))];
  // Liveness only refines the choice: with Redis away the device still gets its region's relay.
  // Relays stamp their entries by Redis's clock, so they are read by it too.
  const picked = await runScript(
    deps.redis,
    relayPick,
    [keys.relaysAlive()],
    [await sharedNow(deps), ...urls.map(normaliseRelayUrl)],
  ).then(Number, () => 0);
  return picked > 0 ? (urls[picked - 1] ?? first.relayUrl) : first.relayUrl;
}

/** The client's country as the edge saw it (the dev override in local runs), upper-case ISO-2. */
function clientCountry(deps: Pick<Deps, "config">, client: ClientInfo): string | undefined {
  const c = (deps.config.DEV_CLIENT_COUNTRY ?? client.country)?.toUpperCase();
  return c && /^[A-Z]{2}$/.test(c) ? c : undefined;
}

/** Signs a peer JWT; class and country come from the connecting IP, so a device cannot pick them. */
async function issueJwt(
  deps: Deps,
  deviceId: string,
  accountId: string,
  gen: number,
  client: ClientInfo,
): Promise<string> {
  // Relays check the expiry by Redis's clock: a token stamped by a slow API host would arrive dead.
  const iat = Math.floor((await sharedNow(deps)) / 1000);
  const claims: PeerClaims = {
    sub: deviceId,
    acct: accountId,
    kind: "peer",
    gen,
    iat,
    exp: iat + PEER_TOKEN_TTL_SECONDS,
    ipType: classifyClient(deps, client),
  };
  const geo = clientCountry(deps, client);
  if (geo) claims.geo = geo;
  return signJwt(claims, deps.config.JWT_SECRET);
}

async function newRefreshToken(db: Queryable, deviceId: string, nowMs: number): Promise<string> {
  const token = `prt_${randomHex(32)}`;
  await db.query("INSERT INTO refresh_tokens (token_hash, device_id, expires_at) VALUES ($1, $2, $3)", [
    await hashSecret(token),
    deviceId,
    new Date(nowMs + REFRESH_TOKEN_TTL_MS).toISOString(),
  ]);
  return token;
}

/**
 * Devices whose relay saw them serve a byte stop counting as unproven. The relay marks them in a
 * Redis set; this moves a batch of them into Postgres (the cron calls it too).
 */
export async function promoteServedDevices(deps: Pick<Deps, "redis" | "db">, batch = 1000): Promise<number> {
  const ids = await deps.redis.spop(keys.servedDevices(), batch);
  if (!ids.length) return 0;
  const res = await deps.db.query(
    "UPDATE devices SET proven_at = now() WHERE id = ANY($1) AND proven_at IS NULL",
    [ids],
  );
  return res.rowCount ?? 0;
}

export function classifyClient(deps: Pick<Deps, "config">, client: ClientInfo): IpClass {
  return deps.config.DEV_CLIENT_IP_CLASS ?? classifyAsn(client.asn, client.asOrganization);
}

/**
 * Registers (or re-registers) a device. Same key + name => same deviceId; re-registering bumps the
 * revocation generation so every older JWT dies. Limits are checked under a per-account row lock.
 */
export async function registerDevice(
  deps: Deps,
  input: RegisterInput,
  client: ClientInfo,
): Promise<({ ok: true } & Identity) | Failure> {
  const auth = await authenticateApiKey(deps, input.apiKey);
  if (!auth) return { ok: false, code: "E_UNAUTHORIZED", message: "apiKey is missing, unknown or revoked" };
  if (!hasScope(auth, "supply")) return supplyScopeMissing("device registration");
  const deviceId = await deriveDeviceId(input.apiKey, input.name);
  const ipType = classifyClient(deps, client);
  const nowMs = deps.now().getTime();
  await promoteServedDevices(deps);

  const out = await withTransaction(
    deps.db,
    async (tx): Promise<Failure | { gen: number; refreshToken: string }> => {
      const acct = await tx.query<{ max_devices: number | null; max_unproven_devices: number | null }>(
        "SELECT max_devices, max_unproven_devices FROM accounts WHERE id = $1 FOR UPDATE",
        [auth.accountId],
      );
      const existing = await tx.query<{ revocation_gen: number }>(
        `UPDATE devices SET revocation_gen = revocation_gen + 1, last_registered_at = now(), type = $2,
         connection_method = $3, sdk_version = $4, wallet_address = COALESCE($5, wallet_address),
         country_hint = $6, carrier = $7, ip_type = $8, api_key_id = $10
       WHERE id = $1 AND account_id = $9 RETURNING revocation_gen`,
        [
          deviceId,
          input.type,
          input.connectionMethod ?? null,
          input.sdkVersion ?? null,
          input.walletAddress ?? null,
          input.country ?? null,
          input.carrier ?? null,
          ipType,
          auth.accountId,
          auth.apiKeyId,
        ],
      );
      let gen = existing.rows[0]?.revocation_gen;
      // Re-registration revokes the device's older identity whole: its refresh tokens too, or they
      // would keep minting JWTs at the new generation.
      if (gen !== undefined)
        await tx.query("UPDATE refresh_tokens SET used_at = now() WHERE device_id = $1 AND used_at IS NULL", [
          deviceId,
        ]);
      if (gen === undefined) {
        const global = await getSetting(tx, "device_limits", DEFAULT_LIMITS);
        const maxDevices = acct.rows[0]?.max_devices ?? global.maxDevices;
        const maxUnproven = acct.rows[0]?.max_unproven_devices ?? global.maxUnproven;
        const counts = await tx.query<{ total: string; unproven: string }>(
          `SELECT count(*) AS total, count(*) FILTER (WHERE proven_at IS NULL AND verified_at IS NULL) AS unproven
         FROM devices WHERE account_id = $1`,
          [auth.accountId],
        );
        const total = Number(counts.rows[0]?.total ?? 0);
        const unproven = Number(counts.rows[0]?.unproven ?? 0);
        if (total >= maxDevices) {
          return {
            ok: false,
            code: "E_DEVICE_LIMIT",
            message: `account holds ${total} devices; the limit is ${maxDevices}`,
          };
        }
        if (unproven >= maxUnproven) {
          return {
            ok: false,
            code: "E_UNPROVEN_LIMIT",
            message: `account has ${unproven} devices that never served traffic nor passed verification; the limit is ${maxUnproven}. Give every instance a stable name so restarts reuse one device`,
          };
        }
        const inserted = await tx.query<{ revocation_gen: number }>(
          `INSERT INTO devices (id, account_id, name, type, connection_method, sdk_version, wallet_address,
           country_hint, carrier, ip_type, api_key_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING revocation_gen`,
          [
            deviceId,
            auth.accountId,
            input.name,
            input.type,
            input.connectionMethod ?? null,
            input.sdkVersion ?? null,
            input.walletAddress ?? null,
            input.country ?? null,
            input.carrier ?? null,
            ipType,
            auth.apiKeyId,
          ],
        );
        gen = inserted.rows[0]!.revocation_gen;
      }
      return { gen, refreshToken: await newRefreshToken(tx, deviceId, nowMs) };
    },
  );
  if ("ok" in out) return out;

  // Relays compare a token's generation with this key: older tokens stop working from here on, and
  // sockets still open on an older one close (the relays hear it on the revocation channel).
  await publishDeviceRevocations(deps.redis, [{ deviceId, gen: out.gen }]);
  const [jwt, relay, rates] = await Promise.all([
    issueJwt(deps, deviceId, auth.accountId, out.gen, client),
    assignRelay(deps, { hint: input.country, edge: clientCountry(deps, client) }),
    earningsPerGB(deps.db, auth.accountId),
  ]);
  return {
    ok: true,
    deviceId,
    accountId: auth.accountId,
    jwt,
    refreshToken: out.refreshToken,
    relay,
    ipType,
    earningsPerGB: rates,
    expiresIn: PEER_TOKEN_TTL_SECONDS,
  };
}

/**
 * Trades a refresh token for a new JWT at the device's current generation, plus the relay the
 * device should use now (assignRelay). With `rotate` the presented token is spent (single use,
 * atomically) and a new one returned.
 */
export async function refreshIdentity(
  deps: Deps,
  deviceId: string,
  refreshToken: string,
  rotate: boolean,
  client: ClientInfo,
): Promise<{ ok: true; jwt: string; refreshToken?: string; relay: string } | Failure> {
  const tokenHash = await hashSecret(refreshToken);
  const nowMs = deps.now().getTime();
  const out = await withTransaction(deps.db, async (tx) => {
    // FOR UPDATE: two concurrent rotations of one token serialise here; the second finds it used.
    // The key that registered the device must still be live (not revoked, not past a rotation's
    // grace): revoking a key ends its devices' identities, not only new registrations.
    const found = await tx.query<{ account_id: string; revocation_gen: number; country_hint: string | null }>(
      `SELECT d.account_id, d.revocation_gen, d.country_hint FROM refresh_tokens t JOIN devices d ON d.id = t.device_id
         LEFT JOIN api_keys k ON k.id = d.api_key_id
       WHERE t.token_hash = $1 AND t.device_id = $2 AND t.used_at IS NULL AND t.expires_at > $3
         AND (d.api_key_id IS NULL OR (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $3)))
       FOR UPDATE OF t`,
      [tokenHash, deviceId, new Date(nowMs).toISOString()],
    );
    const row = found.rows[0];
    if (!row) {
      const message =
        "refreshToken is unknown, expired, already used or revoked, not this device's, or its API key was revoked: register again";
      return { ok: false, code: "E_UNAUTHORIZED", message } as const;
    }
    const jwt = await issueJwt(deps, deviceId, row.account_id, row.revocation_gen, client);
    if (!rotate) return { ok: true, jwt, countryHint: row.country_hint } as const;
    await tx.query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", [tokenHash]);
    const rotated = await newRefreshToken(tx, deviceId, nowMs);
    return { ok: true, jwt, refreshToken: rotated, countryHint: row.country_hint } as const;
  });
  if (!out.ok) return out;
  // The relay the device should be on now: a device whose relay died learns where to go (a live
  // relay of its region, else of the next region) from the refresh it makes anyway.
  const { countryHint, ...identity } = out;
  const relay = await assignRelay(deps, { hint: countryHint, edge: clientCountry(deps, client) });
  return { ...identity, relay };
}

/** A fresh JWT for a device, for its owner (Android-style GET /v1/peer/token/{deviceId}). */
export async function tokenForOwner(
  deps: Deps,
  apiKey: string | undefined,
  deviceId: string,
  client: ClientInfo,
) {
  const auth = await authenticateApiKey(deps, apiKey);
  if (!auth)
    return {
      ok: false,
      code: "E_UNAUTHORIZED",
      message: "X-API-Key is missing, unknown or revoked",
    } as Failure;
  if (!hasScope(auth, "supply")) return supplyScopeMissing("GET /v1/peer/token/{deviceId}");
  const { rows } = await deps.db.query<{ revocation_gen: number }>(
    "SELECT revocation_gen FROM devices WHERE id = $1 AND account_id = $2",
    [deviceId, auth.accountId],
  );
  if (!rows[0])
    return { ok: false, code: "E_NOT_FOUND", message: `no device ${deviceId} on this account` } as Failure;
  return {
    ok: true as const,
    jwt: await issueJwt(deps, deviceId, auth.accountId, rows[0].revocation_gen, client),
  };
}

/**
 * Inside the caller's transaction: every device a key registered gets a new generation and loses
 * its refresh tokens. Returns what publishDeviceRevocations must announce after the commit.
 */
export async function revokeDevicesOfKey(
  tx: Queryable,
  keyId: string,
): Promise<{ deviceId: string; gen: number }[]> {
  const { rows } = await tx.query<{ id: string; revocation_gen: number }>(
    "UPDATE devices SET revocation_gen = revocation_gen + 1 WHERE api_key_id = $1 RETURNING id, revocation_gen",
    [keyId],
  );
  if (rows.length === 0) return [];
  await tx.query("UPDATE refresh_tokens SET used_at = now() WHERE device_id = ANY($1) AND used_at IS NULL", [
    rows.map((r) => r.id),
  ]);
  return rows.map((r) => ({ deviceId: r.id, gen: r.revocation_gen }));
}

/** Stores each device's generation in Redis and tells the relays, which close older sockets. */
export async function publishDeviceRevocations(
  redis: Pick<RedisClient, "eval" | "evalsha">,
  devices: { deviceId: string; gen: number }[],
): Promise<void> {
  // Bounded parallelism: a key with many devices must not open thousands of requests at once.
  for (let i = 0; i < devices.length; i += 50) {
    await Promise.all(
      devices
        .slice(i, i + 50)
        .map((d) =>
          runScript(
            redis,
            deviceRevoke,
            [keys.deviceGen(d.deviceId)],
            [d.gen, keys.deviceRevokedChannel(), d.deviceId],
          ),
        ),
    );
  }
}
