/** The one stylesheet of the pages, served from /assets/site.css (the CSP allows no inline style). */
export const SITE_CSS = `
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #fbfbfc; --muted: #5b6470; --line: #d8dde3;
  --peer: #2f6fdf; --mbl: #d9822b; --ok: #1f8f4e; --bad: #c23a3a; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8eb; --bg: #14171b; --muted: #9aa3ad; --line: #2c3239; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: baseline; padding: .75rem 1rem; border-bottom: 1px solid var(--line); }
header .brand { font-weight: 700; font-size: 1.1rem; text-decoration: none; color: var(--fg); }
nav { display: flex; gap: 1rem; flex-wrap: wrap; }
a { color: var(--peer); }
main { max-width: 60rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.6rem; margin: .5rem 0; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.lede, .fine, .watchdog { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr)); gap: .75rem; }
.card { border: 1px solid var(--line); border-radius: .5rem; padding: .75rem; }
.card .big { font-size: 1.6rem; font-weight: 700; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
pre { overflow-x: auto; padding: .75rem; border: 1px solid var(--line); border-radius: .5rem; font-size: .85rem; white-space: pre; }
code { font-size: .9em; }
.chart svg { width: 100%; height: auto; }
.chart .grid { stroke: var(--line); stroke-width: 1; }
.chart .axis { fill: var(--muted); font-size: 11px; }
.chart .line { fill: none; stroke-width: 2; }
.chart .dot { fill: currentColor; stroke: none; }
.chart .s-peer { stroke: var(--peer); color: var(--peer); } .chart .s-mbl { stroke: var(--mbl); color: var(--mbl); }
figcaption .key { margin-right: 1rem; font-size: .9rem; }
figcaption .key::before { content: ""; display: inline-block; width: .8rem; height: .2rem; margin-right: .3rem; vertical-align: middle; background: currentColor; }
.alerts li.open strong { color: var(--bad); } .alerts li.resolved strong { color: var(--ok); }
.ok { color: var(--ok); } .bad { color: var(--bad); }
header form.who { margin-left: auto; display: flex; gap: .5rem; align-items: baseline; flex-wrap: wrap; font-size: .9rem; }
.notice { padding: .6rem .8rem; border-radius: .5rem; border: 1px solid var(--line); }
.notice.error { border-color: var(--bad); color: var(--bad); } .notice.ok { border-color: var(--ok); color: var(--ok); }
form.stack { display: grid; gap: .4rem; max-width: 32rem; margin: .5rem 0 1rem; }
form.inline { display: inline-flex; gap: .4rem; margin: 0 .4rem .4rem 0; flex-wrap: wrap; }
input, select, button { font: inherit; padding: .35rem .5rem; border: 1px solid var(--line); border-radius: .35rem; background: var(--bg); color: var(--fg); max-width: 100%; }
button { cursor: pointer; background: var(--peer); color: #fff; border-color: var(--peer); }
button.danger { background: var(--bad); border-color: var(--bad); }
header form.who button { background: transparent; color: var(--peer); }
.scroll { overflow-x: auto; }
.hash code, .hash a { word-break: break-all; }
.badge { display: inline-block; padding: 0 .4rem; border-radius: .3rem; border: 1px solid var(--line); font-size: .85rem; }
.b-listed { border-color: var(--ok); color: var(--ok); } .b-offline { color: var(--muted); } .b-unverified { color: var(--mbl); border-color: var(--mbl); }
`;
