/** Who may open a signed-in page and post its forms, and the answer for everyone else. */
import type { Context } from "hono";
import type { AppEnv } from "../env.ts";
import type { ApiKeyAccount } from "../services/auth.ts";
import { renderPrivate } from "./html.ts";
import { RefusedPage } from "./refused.tsx";
import { checkFormPost, type PageSession, type PostCheck, pageSession } from "./session.ts";
import { signedInAs } from "./sign-in.tsx";

export interface PageRole {
  /** where the page lives: a visitor without a session is sent to sign in and back here */
  path: "/admin" | "/farmer";
  allows(account: ApiKeyAccount): boolean;
  /** why a signed-in key that is not allowed may not open the page */
  viewRefusal: string;
  /** why it may not post the page's forms */
  postRefusal: string;
}

/** The session, if its key may open the page; otherwise the redirect to sign in or the refusal. */
export async function sessionFor(c: Context<AppEnv>, role: PageRole): Promise<PageSession | Response> {
  const s = await pageSession(c);
  if (!s) return c.redirect(`/sign-in?next=${role.path}`, 303);
  if (!role.allows(s.account))
    return renderPrivate(c, <RefusedPage reason={role.viewRefusal} signedIn={signedInAs(s)} />, 403);
  return s;
}

/** A form post's checks (origin, session, CSRF, then the role); the refusal page (403) otherwise. */
export async function formPostFor(
  c: Context<AppEnv>,
  role: PageRole,
): Promise<Extract<PostCheck, { ok: true }> | Response> {
  const check = await checkFormPost(c);
  if (!check.ok) return renderPrivate(c, <RefusedPage reason={check.reason} />, check.status);
  if (!role.allows(check.session.account))
    return renderPrivate(
      c,
      <RefusedPage reason={role.postRefusal} signedIn={signedInAs(check.session)} />,
      403,
    );
  return check;
}
