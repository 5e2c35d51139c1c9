/** What every HTML page answers with: a strict CSP and friends, and the doctype in front. */
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";

// No script, no inline style, no framing, no third-party anything; forms post only to this origin.
export const CSP =
  "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export function htmlHeaders(c: Context<AppEnv>) {
  c.header("Content-Security-Policy", CSP);
  c.header("X-Content-Type-Options", "nosniff");
  // same-origin, not no-referrer: under no-referrer Chromium sends `Origin: null` with our own form
  // posts, which the CSRF origin check must refuse. Other sites still get no referrer.
  c.header("Referrer-Policy", "same-origin");
  c.header("X-Frame-Options", "DENY");
}

/** A page of a signed-in person (or the sign-in form): never cached, by anyone. */
export async function renderPrivate(
  c: Context<AppEnv>,
  page: { toString(): string | Promise<string> },
  status = 200,
) {
  htmlHeaders(c);
  c.header("Cache-Control", "no-store");
  c.header("Vary", "Cookie");
  return c.html(`<!doctype html>${await page.toString()}`, status as 200);
}
