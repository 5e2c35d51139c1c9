/** HS256 JWTs with WebCrypto (works in Workers and Node). Peers get these; relays verify them locally. */

export interface PeerClaims {
  /** deviceId (agent_...) */
  sub: string;
  /** owning account id */
  acct: string;
  /** token kind: "peer" for device tokens */
  kind: "peer";
  /** revocation generation: invalid once the device's current generation is higher */
  gen: number;
  iat: number;
  exp: number;
  /** IP class the API decided from the connecting IP's ASN (never the device's claim) */
  ipType?: string;
  /** ISO-2 country the API saw the device connect from (server-side geo), when known */
  geo?: string;
}

export const PEER_TOKEN_TTL_SECONDS = 3600;

const enc = new TextEncoder();

function b64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromB64url(text: string): Uint8Array {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

type HmacKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;
const keyCache = new Map<string, Promise<HmacKey>>();
function hmacKey(secret: string): Promise<HmacKey> {
  let k = keyCache.get(secret);
  if (!k) {
    k = crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    keyCache.set(secret, k);
  }
  return k;
}

const HEADER = b64url(enc.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));

export async function signJwt(claims: object, secret: string): Promise<string> {
  const body = `${HEADER}.${b64url(enc.encode(JSON.stringify(claims)))}`;
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), enc.encode(body)));
  return `${body}.${b64url(sig)}`;
}

export type VerifyResult<T> =
  | { ok: true; claims: T }
  | { ok: false; reason: "malformed" | "signature" | "expired" };

/** A token's signed part, signature and claims, or undefined when it is not one of our HS256 JWTs. */
function parseJwt<T>(token: string): { signed: string; sig: Uint8Array; claims: T } | undefined {
  const parts = token.split(".");
  if (parts.length !== 3 || parts[0] !== HEADER) return undefined;
  try {
    const sig = fromB64url(parts[2]!);
    const claims = JSON.parse(new TextDecoder().decode(fromB64url(parts[1]!))) as T;
    return { signed: `${parts[0]}.${parts[1]}`, sig, claims };
  } catch {
    return undefined;
  }
}

function judge<T extends { exp: number }>(claims: T, valid: boolean, nowSec: number): VerifyResult<T> {
  if (!valid) return { ok: false, reason: "signature" };
  if (typeof claims.exp !== "number" || claims.exp <= nowSec) return { ok: false, reason: "expired" };
  return { ok: true, claims };
}

/** Checks shape, HS256 signature and expiry. Revocation generation is the caller's check (it needs Redis). */
export async function verifyJwt<T extends { exp: number }>(
  token: string,
  secret: string,
  nowSec: number,
): Promise<VerifyResult<T>> {
  const parsed = parseJwt<T>(token);
  if (!parsed) return { ok: false, reason: "malformed" };
  const valid = await crypto.subtle.verify(
    "HMAC",
    await hmacKey(secret),
    parsed.sig as Uint8Array<ArrayBuffer>,
    enc.encode(parsed.signed),
  );
  return judge(parsed.claims, valid, nowSec);
}

/**
 * verifyJwt with the signature checked by `valid` (synchronously): the relay passes node:crypto's
 * HMAC (shared/jwt.node.ts), which takes microseconds where WebCrypto's job round trip took about
 * 180 us of CPU per token, the largest cost of accepting a reconnecting fleet.
 */
export function verifyJwtWith<T extends { exp: number }>(
  token: string,
  nowSec: number,
  valid: (signed: string, sig: Uint8Array) => boolean,
): VerifyResult<T> {
  const parsed = parseJwt<T>(token);
  if (!parsed) return { ok: false, reason: "malformed" };
  return judge(parsed.claims, valid(parsed.signed, parsed.sig), nowSec);
}

/** deviceId = "agent_" + first 16 hex chars of SHA-256(apiKey + ":" + name). Stable forever. */
export async function deriveDeviceId(apiKey: string, name: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(`${apiKey}:${name}`)));
  let hex = "";
  for (const b of digest.subarray(0, 8)) hex += b.toString(16).padStart(2, "0");
  return `agent_${hex}`;
}
