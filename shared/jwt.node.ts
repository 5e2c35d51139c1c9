// Node's side of shared/jwt.ts: HS256 checked with node:crypto, synchronously (the relay's hot path).
import { createHmac, timingSafeEqual } from "node:crypto";

/** A signature check for verifyJwtWith: HMAC-SHA256 of the signed part under `secret`, in constant time. */
export function hs256Check(secret: string): (signed: string, sig: Uint8Array) => boolean {
  return (signed, sig) => {
    const expected = createHmac("sha256", secret).update(signed).digest();
    return sig.length === expected.length && timingSafeEqual(sig, expected);
  };
}
