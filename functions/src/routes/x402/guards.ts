/**
 * What the x402 routes check before they answer: purchases are open (rails), the session behind
 * X-Session-Token (live, not expired; its gateway mirror repaired when missing), readable bodies,
 * rate limits, and the request's payment proof and paid context.
 */
import type { Context } from "hono";
import { readCredentialState } from "../../../../shared/credentials.ts";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { type CredentialRow, syncCredentialMirror } from "../../services/credentials.ts";
import { hitRateLimit } from "../../services/rate-limit.ts";
import { railsFromConfig, type X402Rails, x402Readiness } from "../../services/x402-config.ts";
import type { PaidContext } from "../../services/x402-paid-flow.ts";
import { type ProofParse, readPaymentProof } from "../../services/x402-payment.ts";
import { sessionByToken, type X402Product, type X402Session } from "../../services/x402-purchase.ts";

/** The rails, or 503 naming what is missing: no money is taken in a half-configured state. */
export async function requireRails(c: Context<AppEnv>): Promise<X402Rails> {
  const deps = c.get("deps");
  const ready = await x402Readiness({ config: deps.config, db: deps.db, now: deps.now });
  if (!ready.ok)
    throw new ApiError("E_UNAVAILABLE", `x402 purchases are unavailable: ${ready.problems.join("; ")}`, {
      details: { problems: ready.problems },
      headers: { "Retry-After": "30", "Cache-Control": "no-store" },
    });
  return ready.rails;
}

/**
 * For the price sheets, which answer even while purchases are off: the configured rails (null when
 * there are none) and whether purchases are open.
 */
export async function sheetRails(
  c: Context<AppEnv>,
): Promise<{ rails: X402Rails | null; purchasable: boolean }> {
  const deps = c.get("deps");
  const built = railsFromConfig(deps.config);
  if (!built.ok) return { rails: null, purchasable: false };
  return { rails: built.rails, purchasable: (await x402Readiness(deps)).ok };
}

/** A 400 in the validation hook's shape, naming the field. */
export function fieldError(field: string, message: string): ApiError {
  return new ApiError("E_VALIDATION", `invalid request: ${field}: ${message}`, {
    details: { issues: [{ path: field, message }] },
  });
}

export function clientIp(c: Context<AppEnv>): string {
  return c.req.header("cf-connecting-ip") ?? "unknown";
}

export async function enforceRateLimit(
  c: Context<AppEnv>,
  scope: string,
  id: string,
  limit: number,
  windowMs: number,
): Promise<void> {
  const decision = await hitRateLimit(c.get("deps").redis, scope, id, limit, windowMs);
  if (!decision.allowed)
    throw new ApiError(
      "E_RATE_LIMITED",
      `too many ${scope} requests; retry in ${decision.retryAfterSeconds} s`,
      {
        headers: { "Retry-After": String(decision.retryAfterSeconds) },
      },
    );
}

/**
 * Money routes take no body; one that is sent must at least be readable: a body with a NUL byte,
 * or declared JSON that does not parse, is a 400 naming the body (never a 500 further down).
 */
export async function requireReadableBody(c: Context<AppEnv>): Promise<void> {
  if (c.req.method === "GET" || c.req.method === "HEAD") return;
  let text: string;
  try {
    text = await c.req.text();
  } catch {
    throw fieldError("body", "request body could not be read");
  }
  if (text.length === 0) return;
  if (text.includes("\u0000")) throw fieldError("body", "request body contains a NUL byte");
  const type = c.req.header("content-type") ?? "";
  if (/\bjson\b/i.test(type)) {
    try {
      JSON.parse(text);
    } catch (err) {
      throw fieldError("body", `request body is not valid JSON (${(err as Error).message})`);
    }
  }
}

export interface AuthedSession {
  session: X402Session;
  credential: CredentialRow;
  token: string;
}

/**
 * The session behind X-Session-Token: 401 without one, unknown or expired; 409 when it bought the
 * other product. A session whose gateway mirror is missing (a Redis failure after its purchase
 * committed) is repaired here, on its next read.
 */
export async function requireSession(c: Context<AppEnv>, product: X402Product): Promise<AuthedSession> {
  const token = c.req.header("x-session-token");
  if (!token) throw new ApiError("E_UNAUTHORIZED", "X-Session-Token header is required (x402s_...)");
  const deps = c.get("deps");
  const found = await sessionByToken(deps.db, token);
  if (!found) throw new ApiError("E_UNAUTHORIZED", "X-Session-Token is not a valid session token");
  const expiresAt = new Date(found.session.expires_at);
  if (expiresAt.getTime() <= deps.now().getTime())
    throw new ApiError(
      "E_UNAUTHORIZED",
      `this session expired at ${expiresAt.toISOString()}; buy again at /v1/x402/${product}`,
      { details: { expiredAt: expiresAt.toISOString() } },
    );
  if (found.session.product !== product)
    throw new ApiError(
      "E_CONFLICT",
      `this session bought ${found.session.product === "proxy" ? "a dedicated port" : "pool access"}: manage it under /v1/x402/manage/${found.session.product}/`,
      { details: { product: found.session.product } },
    );
  await repairMirror(c, found.credential.id);
  return { ...found, token };
}

async function repairMirror(c: Context<AppEnv>, keyId: string) {
  const { db, redis } = c.get("deps");
  try {
    const state = (await readCredentialState(redis, [keyId])).get(keyId);
    if (!state?.cached) await syncCredentialMirror({ db, redis }, keyId);
  } catch (err) {
    console.error(
      JSON.stringify({ level: "error", msg: "x402: mirror repair failed", keyId, error: String(err) }),
    );
  }
}

/** Bytes the gateway's meter has counted for a key (0 before its first flush). */
export async function usedOf(c: Context<AppEnv>, keyId: string): Promise<number> {
  return (await readCredentialState(c.get("deps").redis, [keyId])).get(keyId)?.usedBytes ?? 0;
}

/** The proof in Payment-Signature or X-PAYMENT; null when the request carries none (it gets the 402). */
export function requestProof(c: Context<AppEnv>): ProofParse | null {
  return readPaymentProof({
    paymentSignature: c.req.header("payment-signature"),
    xPayment: c.req.header("x-payment"),
  });
}

/** What the paid-flow service needs from this request. */
export function paidContext(c: Context<AppEnv>, rails: X402Rails): PaidContext {
  return {
    deps: c.get("deps"),
    rails,
    clientIp: clientIp(c),
    sessionToken: c.req.header("x-session-token"),
    requestId: c.get("requestId"),
  };
}
