/** Prefixed ids and secrets. Prefixes say what a thing is: agent_, pak_, x402s_, psx_, req_. */

const HEX = "0123456789abcdef";

export function randomHex(bytes: number): string {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  let out = "";
  for (const b of buf) out += HEX[b >> 4]! + HEX[b & 15]!;
  return out;
}

export function newId(prefix: string, bytes = 12): string {
  return `${prefix}_${randomHex(bytes)}`;
}

export async function sha256Hex(input: string | Uint8Array): Promise<string> {
  const data = typeof input === "string" ? new TextEncoder().encode(input) : input;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  let out = "";
  for (const b of digest) out += HEX[b >> 4]! + HEX[b & 15]!;
  return out;
}

/** Secrets are stored as their SHA-256; they are high-entropy random strings, so no salt/KDF is needed. */
export const hashSecret = sha256Hex;

/** Compares two equal-length hex/ascii strings without early exit. */
export function timingSafeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
