/**
 * GET/POST /sign-in and POST /sign-out: an API key (supply, operate or ops-agent scope) is
 * exchanged for a session cookie (docs/adr/0020). A bad key gets a clear message, never the key
 * back; attempts are limited per client IP.
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import { type ApiKeyAccount, authenticateApiKey, isHumanOperator, isOpsAgent } from "../services/auth.ts";
import { hitRateLimit } from "../services/rate-limit.ts";
import { createWebSession, deleteWebSession } from "../services/web-sessions.ts";
import { renderPrivate } from "./html.ts";
import { Layout, type SignedIn } from "./layout.tsx";
import { RefusedPage } from "./refused.tsx";
import {
  checkFormPost,
  clearSessionCookie,
  crossSiteReason,
  type PageSession,
  pageSession,
  readForm,
  sessionToken,
  setSessionCookie,
} from "./session.ts";

const PAGE_SCOPES = ["supply", "operate", "ops-agent"] as const;
const NEXT = new Set(["/farmer", "/admin"]);

/** How the header names who is signed in. */
export function signedInAs(s: PageSession | null): SignedIn | null {
  if (!s) return null;
  const a = s.account;
  const role = isHumanOperator(a) ? "operator" : isOpsAgent(a) ? "ops-agent (AI operator)" : a.accountKind;
  return { accountId: a.accountId, apiKeyId: a.apiKeyId, role, csrf: s.csrf };
}

/** Where a key's pages are: the one asked for if the key may see it, else its own. */
function landing(a: ApiKeyAccount, asked: string | undefined): string {
  const mayAdmin = a.scopes.includes("operate") || a.scopes.includes("ops-agent");
  const maySupply = a.scopes.includes("supply");
  if (asked === "/admin" && mayAdmin) return asked;
  if (asked === "/farmer" && maySupply) return asked;
  return maySupply ? "/farmer" : "/admin";
}

function SignInPage(props: { next: string; message?: string; signedIn: SignedIn | null }) {
  return (
    <Layout title="Sign in" signedIn={props.signedIn}>
      <h1>Sign in</h1>
      <p class="lede">
        With an API key of your account: a <code>supply</code> key opens the supplier page, an{" "}
        <code>operate</code> or <code>ops-agent</code> key the operators' console. The key is exchanged for a
        session cookie and never shown again.
      </p>
      {props.message ? (
        <p class="notice error" role="alert" data-testid="sign-in-error">
          {props.message}
        </p>
      ) : null}
      <form method="post" action="/sign-in" class="stack">
        <label for="apiKey">API key</label>
        <input
          id="apiKey"
          name="apiKey"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          placeholder="psx_..."
        />
        <input type="hidden" name="next" value={props.next} />
        <button type="submit">Sign in</button>
      </form>
    </Layout>
  );
}

function clientIp(c: Context<AppEnv>): string {
  return c.req.header("cf-connecting-ip") ?? "unknown";
}

export function registerSignIn(app: OpenAPIHono<AppEnv>) {
  app.get("/sign-in", async (c) => {
    const asked = c.req.query("next");
    return renderPrivate(
      c,
      <SignInPage next={asked && NEXT.has(asked) ? asked : ""} signedIn={signedInAs(await pageSession(c))} />,
    );
  });

  app.post("/sign-in", async (c) => {
    const cross = crossSiteReason(c);
    if (cross) return renderPrivate(c, <RefusedPage reason={cross} />, 403);
    const deps = c.get("deps");
    const form = await readForm(c);
    const next = form.next && NEXT.has(form.next) ? form.next : "";
    const again = (status: number, message: string) =>
      renderPrivate(c, <SignInPage next={next} message={message} signedIn={null} />, status);
    const limit = deps.config.RATE_LIMIT_SIGN_IN_PER_MINUTE;
    const rate = await hitRateLimit(deps.redis, "sign-in", clientIp(c), limit, 60_000);
    if (!rate.allowed) {
      c.header("Retry-After", String(rate.retryAfterSeconds));
      return again(
        429,
        `Too many sign-in attempts from your address (at most ${limit} a minute). Try again in ${rate.retryAfterSeconds} s.`,
      );
    }
    const key = form.apiKey?.trim();
    if (!key) return again(400, "Enter an API key: it starts with psx_.");
    const account = await authenticateApiKey(deps, key);
    if (!account)
      return again(
        401,
        "That API key was not accepted: it is unknown, revoked, or past its rotation's grace period. Keys start with psx_.",
      );
    if (!PAGE_SCOPES.some((s) => account.scopes.includes(s)))
      return again(
        403,
        `That key carries none of the scopes these pages use (${PAGE_SCOPES.join(", ")}); its scopes: ${account.scopes.join(", ") || "none"}.`,
      );
    // A session is made fresh at every sign-in (never reused), so a token planted before cannot ride along.
    await deleteWebSession(deps.db, sessionToken(c));
    const { token } = await createWebSession(deps.db, { account, now: deps.now() });
    setSessionCookie(c, token);
    c.header("Cache-Control", "no-store");
    return c.redirect(landing(account, next), 303);
  });

  app.post("/sign-out", async (c) => {
    const check = await checkFormPost(c);
    if (!check.ok) {
      // Without a live session there is nothing to end: just drop the cookie.
      if (!(await pageSession(c))) {
        clearSessionCookie(c);
        return c.redirect("/sign-in", 303);
      }
      return renderPrivate(c, <RefusedPage reason={check.reason} />, check.status);
    }
    await deleteWebSession(c.get("deps").db, check.session.token);
    clearSessionCookie(c);
    c.header("Cache-Control", "no-store");
    return c.redirect("/sign-in", 303);
  });
}
