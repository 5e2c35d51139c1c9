import type { Context } from "hono";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import type { ClientInfo, Failure } from "../../services/devices.ts";
import { hitRateLimit } from "../../services/rate-limit.ts";

/** What Cloudflare tells us about the caller; locally there is no request.cf (DEV_CLIENT_* stand in). */
export function clientInfo(c: Context<AppEnv>): ClientInfo {
  const cf = (c.req.raw as { cf?: { asn?: number; asOrganization?: string; country?: string } }).cf;
  return {
    ip: c.req.header("cf-connecting-ip") ?? "unknown",
    asn: typeof cf?.asn === "number" ? cf.asn : undefined,
    asOrganization: cf?.asOrganization,
    country: cf?.country,
  };
}

/** Per client IP limit for identity routes; throws 429 with Retry-After. */
export async function limitByIp(c: Context<AppEnv>, scope: "register" | "refresh") {
  const deps = c.get("deps");
  const limit =
    scope === "register"
      ? deps.config.RATE_LIMIT_REGISTER_PER_MINUTE
      : deps.config.RATE_LIMIT_REFRESH_PER_MINUTE;
  const decision = await hitRateLimit(deps.redis, scope, clientInfo(c).ip, limit, 60_000);
  if (!decision.allowed) {
    throw new ApiError(
      "E_RATE_LIMITED",
      `too many ${scope} requests from this address: at most ${limit} per minute`,
      {
        headers: { "Retry-After": String(decision.retryAfterSeconds) },
      },
    );
  }
}

export function fail(f: Failure): never {
  throw new ApiError(f.code, f.message, f.details ? { details: f.details } : {});
}
