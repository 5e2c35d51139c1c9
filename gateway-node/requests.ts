import type { GatewayError } from "./errors.ts";
import { newRequestId } from "./errors.ts";
import type { GatewayContext } from "./tunnel.ts";

/** Keeps a caller's X-Request-ID when it is sane, so their logs and ours line up. */
export function requestIdFrom(header: string | string[] | undefined): string {
  const v = Array.isArray(header) ? header[0] : header;
  return v && /^[A-Za-z0-9._:-]{6,100}$/.test(v) ? v : newRequestId();
}

/** Counts a refused request by code and logs it once with its request id. */
export function countError(ctx: GatewayContext, g: GatewayError, original: unknown, requestId: string): void {
  ctx.metrics.errors.set(g.code, (ctx.metrics.errors.get(g.code) ?? 0) + 1);
  if (g.code === "E_AUTH_INVALID") ctx.metrics.authFailures++;
  // Unexpected failures are logged (never with secrets: errors here carry no credentials, and the
  // logger scrubs secret-shaped values anyway).
  if (g.code === "E_INTERNAL" && original !== g)
    ctx.log.error({ requestId, err: original }, "gateway internal error");
  else ctx.log.info({ requestId, code: g.code }, "request refused");
}
