import { createHash } from "node:crypto";
import { type Pool, parseUsername, type RouteRequest, UsernameParseError } from "../shared/dsl.ts";
import { keys } from "../shared/keys.ts";
import { runScript } from "../shared/lua/script.ts";
import { credAuth, rateLimit } from "../shared/lua/scripts.gen.ts";
import type { RedisClient } from "../shared/redis.ts";
import { GatewayError } from "./errors.ts";

export type AuthRedis = Pick<RedisClient, "evalsha" | "eval">;

/** An authenticated customer and the route it may use (after the quality contract). */
export interface Principal {
  keyId: string;
  accountId: string;
  accountLabel: string;
  tier: Pool;
  maxConnections: number;
  /** the traffic cap in bytes, when the key has one */
  capBytes?: number;
  /** bytes the key had used when it logged in (credused:{keyId}): bounds its holds by what is left */
  usedBytes: number;
  route: RouteRequest;
  /** a dedicated port's endpoint: the only one this key is routed to, whatever the username says */
  endpointId?: string;
}

const WINDOW_MS = 60_000;

/** Reads `Proxy-Authorization: Basic ...`; undefined when absent or not Basic. */
export function basicCredentials(
  header: string | undefined,
): { username: string; password: string } | undefined {
  if (!header) return undefined;
  const m = /^\s*basic\s+([A-Za-z0-9+/=._-]+)\s*$/i.exec(header);
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** The SHA-256 (hex) a well-formed pak_ secret is stored under (credsecret:); undefined when malformed. */
export function secretHash(secret: string): string | undefined {
  if (!secret.startsWith("pak_") || secret.length > 200) return undefined;
  return createHash("sha256").update(secret).digest("hex");
}

/** Quality contract: a key sold for one pool routes only to that pool, whatever the username asks. */
export function routeFor(route: RouteRequest, tier: Pool): RouteRequest {
  return tier === "any" ? route : { ...route, pool: tier };
}

/**
 * Authenticates a customer from the Redis credentials cache (never Postgres): the pak_ secret's
 * SHA-256 names the key, the key's accountLabel must be the username's psx_<account>, and the key
 * must be enabled and unexpired. Throws GatewayError.
 */
export async function authenticate(
  deps: { redis: AuthRedis; now: () => number; authFailLimit: number },
  input: {
    credentials: { username: string; password: string } | undefined;
    clientIp: string;
    /** the password's secretHash when the caller computed it already (login.ts) */
    hash?: string;
  },
): Promise<Principal> {
  const window = Math.floor(deps.now() / WINDOW_MS);
  const failKey = keys.rateLimit("gwauth", input.clientIp, String(window));
  const hash = input.hash ?? secretHash(input.credentials?.password ?? "");
  const wellFormed = hash !== undefined;
  // One round trip on the CONNECT path: the failure counter, the secret's key and the key's cached
  // credential, read together (shared/lua/cred_auth.lua). The checks below still run in their
  // order, so the answers are the same.
  const reply = (await runScript(
    deps.redis,
    credAuth,
    [failKey, keys.credentialSecret(hash ?? "-")],
    [wellFormed ? 1 : 0],
  )) as unknown[];
  const failures = Number(reply[0] ?? 0);
  const keyId = reply[1] ? String(reply[1]) : null;
  const usedBytes = Number(reply[2] ?? 0) || 0;
  const cred: Record<string, string> = {};
  for (let i = 3; i + 1 < reply.length; i += 2) cred[String(reply[i])] = String(reply[i + 1]);
  if (failures >= deps.authFailLimit) {
    throw new GatewayError("E_RATE_LIMITED", "too many failed logins from this address; retry in a minute");
  }
  if (!input.credentials) throw new GatewayError("E_AUTH_REQUIRED", "proxy credentials required");
  let route: RouteRequest;
  try {
    route = parseUsername(input.credentials.username);
  } catch (err) {
    if (err instanceof UsernameParseError)
      throw new GatewayError("E_USERNAME_PARSE", `token "${err.token}": ${err.message}`);
    throw err;
  }
  const fail = async (): Promise<never> => {
    await runScript(deps.redis, rateLimit, [failKey], [deps.authFailLimit, WINDOW_MS]);
    throw new GatewayError("E_AUTH_INVALID", "unknown username or password");
  };
  if (!wellFormed || !keyId) return fail();
  if (!cred.accountLabel || cred.accountLabel.toLowerCase() !== route.account) return fail();

  const expiresAt = Number(cred.expiresAt ?? 0);
  if (expiresAt > 0 && deps.now() >= expiresAt)
    throw new GatewayError("E_CREDENTIAL_SUSPENDED", "credential expired");
  if (cred.enabled !== "1") {
    if (cred.suspendedReason === "cap")
      throw new GatewayError("E_CAP_EXCEEDED", "traffic cap reached; top up to continue");
    throw new GatewayError("E_CREDENTIAL_SUSPENDED", "credential suspended");
  }
  const tier = (["mbl", "peer", "any"].includes(cred.tier ?? "") ? cred.tier : "any") as Pool;
  const effective = routeFor(route, tier);
  return {
    keyId,
    accountId: cred.accountId ?? "",
    accountLabel: cred.accountLabel,
    tier,
    maxConnections: Math.max(0, Number(cred.maxConnections ?? 0) || 0),
    ...(cred.capBytes ? { capBytes: Number(cred.capBytes) } : {}),
    usedBytes,
    route: effective,
    ...(cred.endpointId ? { endpointId: cred.endpointId } : {}),
  };
}
