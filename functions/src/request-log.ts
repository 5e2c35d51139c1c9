// One JSON line per API request (Workers Logs / `wrangler tail` collect console output), carrying
// the request id the answer's X-Request-ID header gives the caller: the same id, in the same
// `req_` form, that the gateway puts on its answers and its own log lines (docs/adr/0021).
import type { Context } from "hono";
import { scrubSecrets } from "../../shared/log-core.ts";

/**
 * Logs the finished request: method, path (never the query string), status, duration. Not under
 * ENVIRONMENT=test: the Worker test suite's own output stays readable (its test sets development).
 */
export function logRequest(c: Context, requestId: string, startedMs: number): void {
  if ((c.env as { ENVIRONMENT?: string } | undefined)?.ENVIRONMENT === "test") return;
  const line = JSON.stringify({
    level: c.res.status >= 500 ? "error" : "info",
    time: new Date().toISOString(),
    service: "api",
    requestId,
    method: c.req.method,
    path: c.req.path,
    status: c.res.status,
    ms: Date.now() - startedMs,
    msg: "request",
  });
  console.log(scrubSecrets(line));
}
