/**
 * The frame every page shares: head, header, the one stylesheet, a nav of the pages, and for a
 * signed-in person who they are and a sign-out button (a form: it works without script).
 */
import type { Child } from "hono/jsx";

export interface SignedIn {
  accountId: string;
  apiKeyId: string;
  /** "supplier", "operator", "ops (AI operator)", ... */
  role: string;
  csrf: string;
}

export function Layout(props: { title: string; children: Child; signedIn?: SignedIn | null }) {
  const who = props.signedIn;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{`${props.title} · peerproxy`}</title>
        <link rel="stylesheet" href="/assets/site.css" />
      </head>
      <body>
        <header>
          <a class="brand" href="/status">
            peerproxy
          </a>
          <nav>
            <a href="/status">Status</a>
            <a href="/pool-quickstart">Agent quickstart</a>
            <a href="/farmer">Supplier</a>
            <a href="/admin">Operators</a>
            <a href="/openapi.json">API</a>
          </nav>
          {who ? (
            <form class="who" method="post" action="/sign-out">
              <span data-testid="signed-in-as">
                {who.role} <code>{who.accountId}</code> (key <code>{who.apiKeyId}</code>)
              </span>
              <input type="hidden" name="csrf" value={who.csrf} />
              <button type="submit">Sign out</button>
            </form>
          ) : null}
        </header>
        <main>{props.children}</main>
      </body>
    </html>
  );
}

/** "3 min ago" for a date relative to `now`; absolute ISO time in the title attribute. */
/** What a form post did (ok) or why it did nothing (error), above the page it returned to. */
export function Notice(props: { notice?: { kind: "ok" | "error"; text: string } | undefined }) {
  const n = props.notice;
  if (!n) return null;
  return (
    <p class={`notice ${n.kind}`} role={n.kind === "error" ? "alert" : "status"} data-testid="notice">
      {n.text}
    </p>
  );
}

export function Ago(props: { at: Date; now: Date }) {
  const s = Math.max(0, Math.round((props.now.getTime() - props.at.getTime()) / 1000));
  const text =
    s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
  return <time datetime={props.at.toISOString()}>{text}</time>;
}
