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

/** Checks shape, HS256 signature and expiry. Revocation generation is the caller's check (it needs Redis). */
export async function verifyJwt<T extends { exp: number }>(
  token: string,
  secret: string,
  nowSec: number,
): Promise<VerifyResult<T>> {
  const parts = token.split(".");
  if (parts.length !== 3 || parts[0] !== HEADER) return { ok: false, reason: "malformed" };
  let sig: Uint8Array;
  let claims: T;
  try {
    sig = fromB64url(parts[2]!);
    claims = JSON.parse(new TextDecoder().decode(fromB64url(parts[1]!))) as T;
  } catch {
    return { ok: false, reason: "malformed" };
  }
  const valid = await crypto.subtle.verify(
    "HMAC",
    await hmacKey(secret),
    sig as Uint8Array<ArrayBuffer>,
    enc.encode(`${parts[0]}.${parts[1]}`),
  );
  if (!valid) return { ok: false, reason: "signature" };
  if (typeof claims.exp !== "number" || claims.exp <= nowSec) return { ok: false, reason: "expired" };
  return { ok: true, claims };
}

/** deviceId = "agent_" + first 16 hex chars of SHA-256(apiKey + ":" + name). Stable forever. */
export async function deriveDeviceId(apiKey: string, name: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(`${apiKey}:${name}`)));
  let hex = "";
  for (const b of digest.subarray(0, 8)) hex += b.toString(16).padStart(2, "0");
  return `agent_${hex}`;
}
