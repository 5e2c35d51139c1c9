import { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { ConfigError } from "../../shared/config.ts";
import { isDatabaseUnavailable } from "../../shared/db/pool.ts";
import { ApiError, type ApiErrorCode, errorBody } from "../../shared/errors.ts";
import { newId } from "../../shared/ids.ts";
import { loadConfig } from "./config.ts";
import { createDeps } from "./deps.ts";
import type { AppEnv } from "./env.ts";
import { allowedMethods, CREDENTIAL_HEADER_NAMES, completeDocument } from "./openapi.ts";
import { registerPages } from "./pages/register.tsx";
import { logRequest } from "./request-log.ts";
import { registerAccountApiKeyRotate } from "./routes/account/api-key-rotate.ts";
import { registerAdminAccountApiKeys } from "./routes/admin/account-api-keys.ts";
import { registerAdminAccounts } from "./routes/admin/accounts.ts";
import { registerAdminAlerts } from "./routes/admin/alerts.ts";
import { registerAdminApiKey } from "./routes/admin/api-key.ts";
import { registerAdminApprovals } from "./routes/admin/approvals.ts";
import { registerAdminKillSwitch } from "./routes/admin/kill-switch.ts";
import { registerModemExits } from "./routes/admin/modem-exits.ts";
import { registerAdminOps } from "./routes/admin/ops-register.ts";
import { registerAdminWithdrawals } from "./routes/admin/withdrawals.ts";
import { errorSchema } from "./routes/errors.ts";
import { registerHealth } from "./routes/health.ts";
import { registerPeerAndroid } from "./routes/peer/android.ts";
import { registerPeerDevices } from "./routes/peer/devices.ts";
import { registerPeerEarnings } from "./routes/peer/earnings.ts";
import { registerPeerRefresh } from "./routes/peer/refresh.ts";
import { registerPeerRegister } from "./routes/peer/register.ts";
import { registerPeerWallet } from "./routes/peer/wallet.ts";
import { registerPeerWithdrawals } from "./routes/peer/withdrawals.ts";
import { registerPoolKey } from "./routes/reseller/pool-key.ts";
import { registerPoolKeyRegenerate } from "./routes/reseller/pool-key-regenerate.ts";
import { registerPoolKeyTopup } from "./routes/reseller/pool-key-topup.ts";
import { registerPoolKeyUsage } from "./routes/reseller/pool-key-usage.ts";
import { registerPoolKeys } from "./routes/reseller/pool-keys.ts";
import { registerStock } from "./routes/stock.ts";
import { registerX402Discovery } from "./routes/x402/discovery.ts";
import { registerX402Manage } from "./routes/x402/manage.ts";
import { registerX402Pool } from "./routes/x402/pool.ts";
import { registerX402Pricing } from "./routes/x402/pricing.ts";
import { registerX402Proxy } from "./routes/x402/proxy.ts";
import { registerX402ProxyManage } from "./routes/x402/proxy-manage.ts";
import { registerX402ProxyPricing } from "./routes/x402/proxy-pricing.ts";

const REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

export function sendError(
  c: Context<AppEnv>,
  code: ApiErrorCode,
  message: string,
  status: number,
  details?: unknown,
) {
  const requestId = c.get("requestId") ?? "unknown";
  return c.json(errorBody(code, message, requestId, details), status as 400);
}

/** Builds the API: one validation hook, one error shape, request ids, routes, /openapi.json. */
export function createApp() {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        // A missing credential header is an authentication failure (401), not a malformed request.
        const credential = result.error.issues.find(
          (i) => i.code === "invalid_type" && CREDENTIAL_HEADER_NAMES.has(String(i.path[0])),
        );
        if (credential && result.error.issues.every((i) => CREDENTIAL_HEADER_NAMES.has(String(i.path[0]))))
          return sendError(
            c as Context<AppEnv>,
            "E_UNAUTHORIZED",
            `the ${String(credential.path[0])} header is required`,
            401,
          );
        const issues = result.error.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
        const summary = issues.map((i) => `${i.path || "(body)"}: ${i.message}`).join("; ");
        return sendError(c as Context<AppEnv>, "E_VALIDATION", `invalid request: ${summary}`, 400, {
          issues,
        });
      }
    },
  });

  app.use("*", async (c, next) => {
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : newId("req", 10);
    c.set("requestId", requestId);
    c.header("X-Request-ID", requestId);
    const started = Date.now();
    const config = loadConfig(c.env ?? {});
    const { deps, dispose } = createDeps(config);
    c.set("deps", deps);
    try {
      await next();
    } finally {
      logRequest(c, requestId, started);
      const done = dispose();
      try {
        c.executionCtx.waitUntil(done);
      } catch {
        await done; // no execution context (plain app.fetch in tests)
      }
    }
  });

  registerHealth(app);
  registerPeerRegister(app);
  registerPeerRefresh(app);
  registerPeerAndroid(app);
  registerPeerEarnings(app);
  registerPeerDevices(app);
  registerStock(app);
  registerPoolKeys(app);
  registerPoolKey(app);
  registerPoolKeyTopup(app);
  registerPoolKeyRegenerate(app);
  registerPoolKeyUsage(app);
  registerModemExits(app);
  registerAdminAlerts(app);
  registerAdminAccounts(app);
  registerAdminAccountApiKeys(app);
  registerAdminApiKey(app);
  registerAccountApiKeyRotate(app);
  registerPeerWallet(app);
  registerPeerWithdrawals(app);
  registerAdminApprovals(app);
  registerAdminWithdrawals(app);
  registerAdminKillSwitch(app);
  registerAdminOps(app);
  registerX402Pricing(app);
  registerX402Pool(app);
  registerX402Manage(app);
  registerX402ProxyPricing(app);
  registerX402Proxy(app);
  registerX402ProxyManage(app);
  registerX402Discovery(app);
  registerPages(app);

  // The document the routes generate, completed with what the global hooks below answer on every
  // route (400, 401, the error body) and credentials as security schemes (functions/src/openapi.ts).
  app.openAPIRegistry.register("Error", errorSchema("Error").ErrorBody);
  let document: unknown;
  app.get("/openapi.json", (c) => {
    document ??= completeDocument(
      app.getOpenAPI31Document({
        openapi: "3.1.0",
        info: {
          title: "peerproxy API",
          version: "0.1.0",
          description:
            "Peer registration, credentials, x402 purchase and operations for the peerproxy network.",
        },
      }),
      "Error",
    );
    return c.json(document);
  });

  // A known path with a method it does not serve is 405 with Allow, not 404.
  let allowed: ((path: string) => string[]) | undefined;
  app.notFound((c) => {
    const path = new URL(c.req.url).pathname;
    allowed ??= allowedMethods(app.routes);
    const methods = allowed(path);
    if (methods.length) {
      c.header("Allow", methods.join(", "));
      return sendError(
        c,
        "E_METHOD_NOT_ALLOWED",
        `${c.req.method} is not allowed on ${path}; allowed: ${methods.join(", ")}`,
        405,
      );
    }
    return sendError(c, "E_NOT_FOUND", `no route for ${c.req.method} ${path}`, 404);
  });

  app.onError((err, c) => {
    if (err instanceof ApiError) {
      for (const [k, v] of Object.entries(err.headers ?? {})) c.header(k, v);
      return sendError(c, err.code, err.message, err.status, err.details);
    }
    if (err instanceof HTTPException && err.status < 500) {
      // Hono's own refusals before a handler runs; the one it raises is a body that is not JSON
      // (e.g. a NUL byte): the same error shape as every other 400, never a 500.
      const malformedJson = /json/i.test(err.message);
      return sendError(
        c,
        err.status === 401 ? "E_UNAUTHORIZED" : "E_BAD_REQUEST",
        malformedJson ? "the request body is not valid JSON; send a JSON document" : err.message,
        err.status,
      );
    }
    if (err instanceof ConfigError) {
      // Fail closed: a half-configured API answers nothing but this.
      return sendError(c, "E_CONFIG", err.message, 503, { variables: err.variables });
    }
    if (isDatabaseUnavailable(err)) {
      // Postgres is full or away for now (a burst past its connection limit): the client's retry
      // will do, so say when, spread over 1-4 s so a burst does not come back at once.
      c.header("Retry-After", String(1 + Math.floor(Math.random() * 4)));
      console.warn(
        JSON.stringify({
          level: "warn",
          requestId: c.get("requestId"),
          error: String(err),
          db: "unavailable",
        }),
      );
      return sendError(
        c,
        "E_UNAVAILABLE",
        "the database is busy or unreachable; retry after Retry-After seconds",
        503,
      );
    }
    console.error(
      JSON.stringify({
        level: "error",
        requestId: c.get("requestId"),
        error: String(err),
        stack: (err as Error)?.stack,
      }),
    );
    return sendError(c, "E_INTERNAL", "internal error; quote the requestId when reporting it", 500);
  });

  return app;
}

export type App = ReturnType<typeof createApp>;
