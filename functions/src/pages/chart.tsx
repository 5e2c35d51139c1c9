/**
 * A line chart of routable endpoints per pool over the last 24 h, drawn on the server as inline SVG
 * (no script, no external image: the page's CSP allows neither).
 */
import type { StatusPoint } from "../services/status.ts";

const W = 640;
const H = 180;
const PAD = { left: 40, right: 10, top: 10, bottom: 24 };
const SERIES = [
  { pool: "peer", label: "peer", cls: "s-peer" },
  { pool: "mbl", label: "mbl (modems)", cls: "s-mbl" },
] as const;

export function RoutableChart(props: { history: Record<"peer" | "mbl", StatusPoint[]>; now: Date }) {
  const end = props.now.getTime();
  const start = end - 24 * 3600_000;
  const max = Math.max(1, ...SERIES.flatMap((s) => props.history[s.pool].map((p) => p.listed)));
  const x = (t: number) => PAD.left + ((t - start) / (end - start)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const ticks = [0, Math.round(max / 2), max].filter((v, i, a) => a.indexOf(v) === i);
  const empty = SERIES.every((s) => props.history[s.pool].length === 0);
  return (
    <figure class="chart">
      <svg
        viewBox={`0 0 ${W} ${H}`}
        role="img"
        aria-label="Routable endpoints per pool over the last 24 hours"
        preserveAspectRatio="xMidYMid meet"
      >
        {ticks.map((v) => (
          <g>
            <line class="grid" x1={PAD.left} x2={W - PAD.right} y1={y(v)} y2={y(v)} />
            <text class="axis" x={PAD.left - 6} y={y(v) + 4} text-anchor="end">
              {v}
            </text>
          </g>
        ))}
        {[24, 18, 12, 6, 0].map((h) => (
          <text class="axis" x={x(end - h * 3600_000)} y={H - 6} text-anchor="middle">
            {h === 0 ? "now" : `-${h} h`}
          </text>
        ))}
        {SERIES.map((s) => {
          const pts = props.history[s.pool].filter((p) => p.minute.getTime() >= start);
          if (pts.length === 0) return null;
          const d = pts
            .map((p, i) => `${i ? "L" : "M"}${x(p.minute.getTime()).toFixed(1)},${y(p.listed).toFixed(1)}`)
            .join(" ");
          const last = pts[pts.length - 1]!;
          // The latest point is marked: a fresh network has one point, which a line alone would not show.
          return (
            <g>
              <path class={`line ${s.cls}`} d={d} data-pool={s.pool} />
              <circle
                class={`dot ${s.cls}`}
                cx={x(last.minute.getTime()).toFixed(1)}
                cy={y(last.listed).toFixed(1)}
                r="3"
              />
            </g>
          );
        })}
        {empty ? (
          <text class="axis" x={W / 2} y={H / 2} text-anchor="middle">
            no history yet: the rollup writes a point every minute
          </text>
        ) : null}
      </svg>
      <figcaption>
        {SERIES.map((s) => (
          <span class={`key ${s.cls}`}>{s.label}</span>
        ))}
      </figcaption>
    </figure>
  );
}
