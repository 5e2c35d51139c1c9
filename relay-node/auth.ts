import type { IncomingMessage } from "node:http";
import { hs256Check } from "../shared/jwt.node.ts";
import { type PeerClaims, verifyJwtWith } from "../shared/jwt.ts";
import { keys } from "../shared/keys.ts";
import { CLOSE_BAD_TOKEN, CLOSE_NO_TOKEN } from "../shared/messages.ts";
import type { RelayRedis } from "./state.ts";

export type PeerAuth =
  | { ok: true; claims: PeerClaims; protocol: string }
  | { ok: false; code: number; reason: string; protocol?: string };

const URL_TOKEN_PARAMS = ["token", "jwt", "access_token", "auth", "authorization"];

/** The offered subprotocols, in order (RFC 6455: comma-separated tokens). */
export function offeredProtocols(req: IncomingMessage): string[] {
  const raw = req.headers["sec-websocket-protocol"];
  if (!raw) return [];
  return raw
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
}

/**
 * A token in the URL leaks into proxy and access logs, so it is refused even when the subprotocol
 * also carries one. The URL itself is never logged.
 */
function urlCarriesToken(rawUrl: string): boolean {
  const url = new URL(rawUrl, "http://relay.invalid");
  for (const name of url.searchParams.keys()) if (URL_TOKEN_PARAMS.includes(name.toLowerCase())) return true;
  // A bare JWT anywhere in the path or query ("eyJ" is the base64url of '{"').
  return /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+/.test(rawUrl);
}

/** Verifies a peer's upgrade request: subprotocol token, signature, expiry, revocation generation. */
export async function authenticatePeer(
  req: IncomingMessage,
  deps: { secret: string; previousSecret?: string; redis: Pick<RelayRedis, "get">; nowSec: number },
): Promise<PeerAuth> {
  const offered = offeredProtocols(req);
  const tokenProto = offered.find((p) => p.startsWith("token."));
  // Echo something the client offered, or its handshake fails before it can read our close code.
  const protocol = tokenProto ?? offered[0];
  if (urlCarriesToken(req.url ?? "/"))
    return { ok: false, code: CLOSE_NO_TOKEN, reason: "token_in_url", protocol };
  if (!tokenProto) return { ok: false, code: CLOSE_NO_TOKEN, reason: "no_token", protocol };
  const token = tokenProto.slice("token.".length);
  if (token.split(".").length !== 3)
    return { ok: false, code: CLOSE_NO_TOKEN, reason: "malformed_token", protocol };

  let verified = verifyJwtWith<PeerClaims>(token, deps.nowSec, hs256Check(deps.secret));
  // While JWT_SECRET rotates (docs/deploy.md) tokens the API signed with the old one stay good until
  // they expire, so the fleet is never dropped.
  if (!verified.ok && verified.reason === "signature" && deps.previousSecret)
    verified = verifyJwtWith<PeerClaims>(token, deps.nowSec, hs256Check(deps.previousSecret));
  if (!verified.ok) {
    const code = verified.reason === "malformed" ? CLOSE_NO_TOKEN : CLOSE_BAD_TOKEN;
    return { ok: false, code, reason: verified.reason, protocol };
  }
  const claims = verified.claims;
  if (
    claims.kind !== "peer" ||
    typeof claims.sub !== "string" ||
    !claims.sub.startsWith("agent_") ||
    typeof claims.gen !== "number"
  ) {
    return { ok: false, code: CLOSE_BAD_TOKEN, reason: "wrong_claims", protocol };
  }
  // Re-registration bumps the generation; checking it on every connect is what revokes old tokens.
  const current = Number((await deps.redis.get(keys.deviceGen(claims.sub))) ?? "1");
  // A garbled generation fails closed: NaN would otherwise compare false and let any token in.
  if (!Number.isFinite(current) || claims.gen < current)
    return { ok: false, code: CLOSE_BAD_TOKEN, reason: "revoked", protocol };
  return { ok: true, claims, protocol: tokenProto };
}
