/** The frame every page shares: head, header, the one stylesheet, and a nav of the public pages. */
import type { Child } from "hono/jsx";

export function Layout(props: { title: string; children: Child }) {
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
            <a href="/openapi.json">API</a>
          </nav>
        </header>
        <main>{props.children}</main>
      </body>
    </html>
  );
}

/** "3 min ago" for a date relative to `now`; absolute ISO time in the title attribute. */
export function Ago(props: { at: Date; now: Date }) {
  const s = Math.max(0, Math.round((props.now.getTime() - props.at.getTime()) / 1000));
  const text =
    s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
  return <time datetime={props.at.toISOString()}>{text}</time>;
}
