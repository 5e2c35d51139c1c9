/** /v1/x402/manage/pool/*: what an agent does with its X-Session-Token (credit, usage, topup, regenerate, connection). */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../../env.ts";
import { liveCountries } from "../../services/stock.ts";
import { accessBody, creditOf } from "./answers.ts";
import { type AuthedSession, requireSession, usedOf } from "./guards.ts";
import { Credit, PoolAccess, SessionHeaders, TAG } from "./schemas.ts";
import { registerSessionRoutes, SESSION_ERRORS } from "./session.ts";

const BASE = "/v1/x402/manage/pool";

const CreditBody = z
  .object({ username: z.string(), credit: Credit, sessionExpiresAt: z.string() })
  .openapi("X402CreditAnswer");

const credit = createRoute({
  method: "get",
  path: `${BASE}/credit`,
  summary: "Remaining traffic, read through from the gateway's meter",
  tags: [TAG],
  request: { headers: SessionHeaders },
  responses: {
    200: { description: "Credit", content: { "application/json": { schema: CreditBody } } },
    ...SESSION_ERRORS,
  },
});

async function access(c: Context<AppEnv>, s: AuthedSession, secret: string) {
  const deps = c.get("deps");
  return accessBody(c, {
    ...s,
    secret,
    sessionToken: s.token,
    usedBytes: await usedOf(c, s.credential.id),
    countries: await liveCountries(deps.db, "mbl"),
  });
}

export function registerX402Manage(app: OpenAPIHono<AppEnv>) {
  app.openapi(credit, async (c) => {
    const s = await requireSession(c, "pool");
    c.header("Cache-Control", "no-store");
    return c.json(
      {
        username: s.session.username,
        credit: creditOf(s.credential, await usedOf(c, s.credential.id)),
        sessionExpiresAt: new Date(s.session.expires_at).toISOString(),
      },
      200,
    );
  });

  registerSessionRoutes(app, {
    product: "pool",
    base: BASE,
    Access: PoolAccess,
    connectionSummary: "Re-emit the proxy credentials of this session (recovery)",
    access,
  });
}
