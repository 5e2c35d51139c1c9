/**
 * The pages' side of sign-in (docs/adr/0020): the session cookie, the CSRF checks every form post
 * passes, and the guard each signed-in page runs. The session records live in
 * services/web-sessions.ts.
 */
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { AppEnv } from "../env.ts";
import type { ApiKeyAccount } from "../services/auth.ts";
import { csrfTokenFor, csrfTokenMatches, readWebSession, SESSION_TTL_MS } from "../services/web-sessions.ts";

export const COOKIE = "pp_session";

/** The account signed in on this request, its session token and the CSRF token its forms carry. */
export interface PageSession {
  account: ApiKeyAccount;
  token: string;
  csrf: string;
}

/**
 * Secure outside local development (plain http on 127.0.0.1), and then with the `__Host-` prefix
 * too: the browser refuses such a cookie from http, from a subdomain, or with a Domain or other Path.
 */
export function secureCookies(c: Context<AppEnv>): boolean {
  return c.get("deps").config.ENVIRONMENT !== "development";
}

const prefix = (c: Context<AppEnv>) => (secureCookies(c) ? ("host" as const) : undefined);

export function setSessionCookie(c: Context<AppEnv>, token: string) {
  setCookie(c, COOKIE, token, {
    httpOnly: true,
    secure: secureCookies(c),
    sameSite: "Strict",
    path: "/",
    maxAge: Math.floor(SESSION_TTL_MS / 1000),
    prefix: prefix(c),
  });
}

export function clearSessionCookie(c: Context<AppEnv>) {
  deleteCookie(c, COOKIE, {
    httpOnly: true,
    secure: secureCookies(c),
    sameSite: "Strict",
    path: "/",
    prefix: prefix(c),
  });
}

export function sessionToken(c: Context<AppEnv>): string | undefined {
  return getCookie(c, COOKIE, prefix(c));
}

/** The session this request carries, or null (no cookie, unknown, expired, or its key is gone). */
export async function pageSession(c: Context<AppEnv>): Promise<PageSession | null> {
  const token = sessionToken(c);
  if (!token) return null;
  const deps = c.get("deps");
  const account = await readWebSession(deps.db, token, deps.now());
  return account ? { account, token, csrf: await csrfTokenFor(token) } : null;
}

/**
 * Why a form post is not from one of our own pages, or null. Browsers send Sec-Fetch-Site and
 * Origin on every POST; a request without them (curl) still needs the session's CSRF token.
 */
export function crossSiteReason(c: Context<AppEnv>): string | null {
  const site = c.req.header("sec-fetch-site");
  if (site && site !== "same-origin")
    return `the form was posted from another site (Sec-Fetch-Site: ${site})`;
  const origin = c.req.header("origin");
  if (origin && origin !== new URL(c.req.url).origin)
    return "the form was posted from another origin than this page's";
  return null;
}

export type PostCheck =
  | { ok: true; session: PageSession; form: Record<string, string> }
  | { ok: false; status: 403; reason: string };

/**
 * What every signed-in form post passes before it acts: same origin, a live session, and that
 * session's CSRF token in the `csrf` field. Scope checks come after, in the handler.
 */
export async function checkFormPost(c: Context<AppEnv>): Promise<PostCheck> {
  const cross = crossSiteReason(c);
  if (cross) return { ok: false, status: 403, reason: cross };
  const session = await pageSession(c);
  if (!session) return { ok: false, status: 403, reason: "you are not signed in (or the session ended)" };
  const form = await readForm(c);
  if (!(await csrfTokenMatches(session.token, form.csrf)))
    return {
      ok: false,
      status: 403,
      reason: form.csrf ? "the form's CSRF token is not this session's" : "the form carries no CSRF token",
    };
  return { ok: true, session, form };
}

/** A urlencoded or multipart form's text fields (files and repeated names are ignored). */
export async function readForm(c: Context<AppEnv>): Promise<Record<string, string>> {
  const type = c.req.header("content-type") ?? "";
  if (!/^(application\/x-www-form-urlencoded|multipart\/form-data)/i.test(type)) return {};
  const body = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(body)) if (typeof v === "string") out[k] = v;
  return out;
}
