/**
 * The HTML pages (server-rendered with Hono JSX, no client script): the public /status and
 * /pool-quickstart, the signed-in /farmer and /admin with /sign-in (docs/adr/0020), and their one
 * stylesheet. They read and act through the same services the JSON routes use. They are not in
 * /openapi.json: that document describes the JSON API.
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import { readNetworkStatus } from "../services/status.ts";
import { registerAdmin } from "./admin.tsx";
import { registerFarmer } from "./farmer.tsx";
import { htmlHeaders } from "./html.ts";
import { type LiveQuote, QuickstartPage } from "./quickstart.tsx";
import { registerSignIn } from "./sign-in.tsx";
import { SITE_CSS } from "./site.css.ts";
import { StatusPage } from "./status.tsx";

/** The sample order the quickstart quotes live: the cheapest amount anyone can buy, anywhere. */
const SAMPLE_ORDER = "/v1/x402/pool?tier=peer&country=any&traffic=0.1";

/** Asks this very API for the 402 of the sample order, through the whole middleware chain. */
async function liveQuote(c: Context<AppEnv>, app: OpenAPIHono<AppEnv>): Promise<LiveQuote> {
  const url = new URL(SAMPLE_ORDER, c.req.url).toString();
  let ctx: Parameters<typeof app.fetch>[2];
  try {
    ctx = c.executionCtx;
  } catch {
    ctx = undefined; // plain app.fetch in tests
  }
  const res = await app.fetch(new Request(url), c.env, ctx);
  const text = await res.text();
  let body = text;
  try {
    body = JSON.stringify(JSON.parse(text), null, 2);
  } catch {}
  const header = res.headers.get("payment-required");
  let paymentRequired: string | null = null;
  if (header) {
    try {
      paymentRequired = JSON.stringify(JSON.parse(atob(header)), null, 2);
    } catch {
      paymentRequired = header;
    }
  }
  return { url, status: res.status, body, paymentRequired };
}

export function registerPages(app: OpenAPIHono<AppEnv>) {
  app.get("/assets/site.css", (c) => {
    c.header("Cache-Control", "public, max-age=300");
    c.header("X-Content-Type-Options", "nosniff");
    return c.body(SITE_CSS, 200, { "Content-Type": "text/css; charset=utf-8" });
  });

  app.get("/status", async (c) => {
    const status = await readNetworkStatus(c.get("deps").db, new Date());
    htmlHeaders(c);
    c.header("Cache-Control", "public, max-age=15");
    return c.html(`<!doctype html>${await (<StatusPage status={status} />).toString()}`);
  });

  app.get("/pool-quickstart", async (c) => {
    const quote = await liveQuote(c, app);
    htmlHeaders(c);
    c.header("Cache-Control", "no-store");
    return c.html(
      `<!doctype html>${await (<QuickstartPage origin={new URL(c.req.url).origin} quote={quote} />).toString()}`,
    );
  });

  registerSignIn(app);
  registerFarmer(app);
  registerAdmin(app);
}
