// One table of figures with their same-run anchors and ratios (markdown, printed and written to
// bench/results/latest.md), and an SVG chart of latency percentiles per route.

export interface Row {
  figure: string;
  value: string;
  anchor: string;
  /** value / anchor, or a note when there is no anchor */
  ratio: string;
  goal: string;
}

export function fmtMs(x: number): string {
  return Number.isFinite(x) ? `${x < 10 ? x.toFixed(2) : x.toFixed(1)} ms` : "n/a";
}

export function fmtRate(bytesPerSecond: number): string {
  return Number.isFinite(bytesPerSecond) ? `${(bytesPerSecond / 1e6).toFixed(0)} MB/s` : "n/a";
}

export function ratio(value: number, anchor: number, digits = 2): string {
  return Number.isFinite(value) && Number.isFinite(anchor) && anchor > 0
    ? `${(value / anchor).toFixed(digits)}x`
    : "n/a";
}

/** A markdown table with padded columns, as the repository's formatter (Biome) writes them. */
export function markdownTable(rows: Row[]): string {
  const head = ["figure", "peerproxy", "anchor (same run)", "ratio", "goal"];
  const body = rows.map((r) =>
    [r.figure, r.value, r.anchor, r.ratio, r.goal].map((c) => c.replaceAll("|", "/")),
  );
  const widths = head.map((h, i) => Math.max(h.length, 3, ...body.map((cells) => cells[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

export interface Series {
  name: string;
  /** the line's pattern, so one route's runs (its colour) tell apart: solid unless given */
  line?: "dashed" | "dotted";
  /** the colour of series `color` (index), so a route keeps its colour across concurrencies */
  color?: number;
  /** percentile -> ms */
  points: { p: number; ms: number }[];
}

const DASHES = { dashed: "6 4", dotted: "2 3" };

const COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/** Latency percentiles (x: p50..p99.9, y: ms on a log scale), one line per route. */
export function latencySvg(title: string, series: Series[]): string {
  const W = 720;
  const H = 400;
  const m = { l: 80, r: 200, t: 40, b: 48 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const ps = [...new Set(series.flatMap((s) => s.points.map((p) => p.p)))].sort((a, b) => a - b);
  const all = series.flatMap((s) => s.points.map((p) => p.ms)).filter((v) => Number.isFinite(v) && v > 0);
  const lo = Math.log10(Math.max(0.01, Math.min(...all, 1)));
  const hi = Math.log10(Math.max(...all, 10)) + 0.1;
  const x = (p: number) => m.l + (ps.length > 1 ? (ps.indexOf(p) / (ps.length - 1)) * pw : pw / 2);
  const y = (ms: number) => m.t + ph - ((Math.log10(Math.max(ms, 0.01)) - lo) / (hi - lo)) * ph;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.l}" y="22" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
    `<line x1="${m.l}" y1="${m.t + ph}" x2="${m.l + pw}" y2="${m.t + ph}" stroke="#333"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${m.t + ph}" stroke="#333"/>`,
  ];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const k of [1, 2, 5]) {
      const v = k * 10 ** e;
      if (Math.log10(v) < lo || Math.log10(v) > hi) continue;
      const yy = y(v).toFixed(1);
      out.push(`<line x1="${m.l}" y1="${yy}" x2="${m.l + pw}" y2="${yy}" stroke="#eee"/>`);
      out.push(`<text x="${m.l - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${v} ms</text>`);
    }
  }
  for (const p of ps)
    out.push(`<text x="${x(p).toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle">p${p}</text>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 8}" text-anchor="middle">percentile</text>`);
  series.forEach((s, i) => {
    const color = COLORS[(s.color ?? i) % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p.ms));
    if (pts.length)
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2"${s.line ? ` stroke-dasharray="${DASHES[s.line]}"` : ""} points="${pts.map((p) => `${x(p.p).toFixed(1)},${y(p.ms).toFixed(1)}`).join(" ")}"/>`,
      );
    for (const p of pts)
      out.push(`<circle cx="${x(p.p).toFixed(1)}" cy="${y(p.ms).toFixed(1)}" r="3" fill="${color}"/>`);
    const ly = m.t + 10 + i * 18;
    out.push(
      `<line x1="${m.l + pw + 12}" y1="${ly}" x2="${m.l + pw + 28}" y2="${ly}" stroke="${color}" stroke-width="3"${s.line ? ` stroke-dasharray="${DASHES[s.line]}"` : ""}/>`,
    );
    out.push(`<text x="${m.l + pw + 32}" y="${ly}" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function escapeXml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
