/**
 * A production modem's upstream proxy credentials, sealed with AES-256-GCM under a key that the API
 * (which seals them at registration) and the gateway and prober (which open them to send
 * `Proxy-Authorization` upstream) share: Postgres and Redis only ever hold the sealed form, so a
 * modem does not rely on network isolation alone. WebCrypto only: runs in Workers and Node.
 */

export interface UpstreamAuth {
  username: string;
  password: string;
}

/** A key is 32 random bytes in base64 (`openssl rand -base64 32`). */
export const UPSTREAM_KEY_RE = /^[A-Za-z0-9+/]{43}=$/;
// Binds a sealed value to its purpose: it cannot be replayed as another kind of secret.
const AAD = new TextEncoder().encode("peerproxy modem upstream auth v1");

const toB64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));
const fromB64 = (text: string) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

function importKey(keyB64: string) {
  const raw = fromB64(keyB64);
  if (raw.length !== 32) throw new Error("upstream auth key must be 32 bytes of base64");
  return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** `v1.<iv>.<ciphertext>` (base64); a fresh IV every time. */
export async function sealUpstreamAuth(keyB64: string, auth: UpstreamAuth): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const plain = new TextEncoder().encode(JSON.stringify({ u: auth.username, p: auth.password }));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: AAD }, await importKey(keyB64), plain),
  );
  return `v1.${toB64(iv)}.${toB64(sealed)}`;
}

/** The credentials, or undefined when the value is not sealed under this key (or was tampered with). */
export async function openUpstreamAuth(keyB64: string, sealed: string): Promise<UpstreamAuth | undefined> {
  const m = /^v1\.([A-Za-z0-9+/=]+)\.([A-Za-z0-9+/=]+)$/.exec(sealed);
  if (!m?.[1] || !m[2]) return undefined;
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: fromB64(m[1]), additionalData: AAD },
      await importKey(keyB64),
      fromB64(m[2]),
    );
    const v = JSON.parse(new TextDecoder().decode(plain)) as { u?: unknown; p?: unknown };
    return typeof v.u === "string" && typeof v.p === "string" ? { username: v.u, password: v.p } : undefined;
  } catch {
    return undefined;
  }
}

/** The `Proxy-Authorization` header value for an upstream HTTP proxy. */
export function basicProxyAuthorization(auth: UpstreamAuth): string {
  const bytes = new TextEncoder().encode(`${auth.username}:${auth.password}`);
  return `Basic ${toB64(bytes)}`;
}
