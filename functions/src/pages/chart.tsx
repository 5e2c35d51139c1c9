/**
 * Line charts drawn on the server as inline SVG (no script, no external image: the pages' CSP
 * allows neither): routable endpoints per pool over 24 h on /status, earnings per day on /farmer.
 */
import type { StatusPoint } from "../services/status.ts";

const W = 640;
const H = 180;
const PAD = { left: 48, right: 10, top: 10, bottom: 24 };

export interface ChartSeries {
  /** data-series attribute of its path, for tests and styles */
  id: string;
  label: string;
  cls: string;
  points: { t: number; v: number }[];
}

/** A time chart: x from `start` to `end` (ms), y from 0 to the largest value, the last point marked. */
export function TimeChart(props: {
  series: ChartSeries[];
  start: number;
  end: number;
  xTicks: { t: number; label: string }[];
  yLabel?: (v: number) => string;
  ariaLabel: string;
  empty: string;
  /** the attribute name carrying the series id on each path (data-pool on /status) */
  seriesAttr?: string;
}) {
  const { start, end } = props;
  const max = Math.max(0, ...props.series.flatMap((s) => s.points.map((p) => p.v)));
  const top = max > 0 ? max : 1;
  const x = (t: number) => PAD.left + ((t - start) / Math.max(1, end - start)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const label = props.yLabel ?? ((v: number) => String(v));
  const ticks = [0, top / 2, top].map((v) => (props.yLabel ? v : Math.round(v)));
  const unique = ticks.filter((v, i, a) => a.indexOf(v) === i);
  const empty = props.series.every((s) => s.points.length === 0);
  const attr = props.seriesAttr ?? "data-series";
  return (
    <figure class="chart">
      <svg
        viewBox={`0 0 ${W} ${H}`}
        role="img"
        aria-label={props.ariaLabel}
        preserveAspectRatio="xMidYMid meet"
      >
        {unique.map((v) => (
          <g>
            <line class="grid" x1={PAD.left} x2={W - PAD.right} y1={y(v)} y2={y(v)} />
            <text class="axis" x={PAD.left - 6} y={y(v) + 4} text-anchor="end">
              {label(v)}
            </text>
          </g>
        ))}
        {props.xTicks.map((tick) => (
          // The tick at the right edge ends there, so its label is not cut off.
          <text class="axis" x={x(tick.t)} y={H - 6} text-anchor={tick.t >= end ? "end" : "middle"}>
            {tick.label}
          </text>
        ))}
        {props.series.map((s) => {
          const pts = s.points.filter((p) => p.t >= start && p.t <= end);
          if (pts.length === 0) return null;
          const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
          const last = pts[pts.length - 1]!;
          // The latest point is marked: a fresh series has one point, which a line alone would not show.
          return (
            <g>
              <path class={`line ${s.cls}`} d={d} {...{ [attr]: s.id }} />
              <circle class={`dot ${s.cls}`} cx={x(last.t).toFixed(1)} cy={y(last.v).toFixed(1)} r="3" />
            </g>
          );
        })}
        {empty ? (
          <text class="axis" x={W / 2} y={H / 2} text-anchor="middle">
            {props.empty}
          </text>
        ) : null}
      </svg>
      <figcaption>
        {props.series.map((s) => (
          <span class={`key ${s.cls}`}>{s.label}</span>
        ))}
      </figcaption>
    </figure>
  );
}

const POOLS = [
  { pool: "peer", label: "peer", cls: "s-peer" },
  { pool: "mbl", label: "mbl (modems)", cls: "s-mbl" },
] as const;

/** Routable endpoints per pool over the last 24 h (/status). */
export function RoutableChart(props: { history: Record<"peer" | "mbl", StatusPoint[]>; now: Date }) {
  const end = props.now.getTime();
  const start = end - 24 * 3600_000;
  return (
    <TimeChart
      series={POOLS.map((s) => ({
        id: s.pool,
        label: s.label,
        cls: s.cls,
        points: props.history[s.pool].map((p) => ({ t: p.minute.getTime(), v: p.listed })),
      }))}
      start={start}
      end={end}
      xTicks={[24, 18, 12, 6, 0].map((h) => ({ t: end - h * 3600_000, label: h === 0 ? "now" : `-${h} h` }))}
      ariaLabel="Routable endpoints per pool over the last 24 hours"
      empty="no history yet: the rollup writes a point every minute"
      seriesAttr="data-pool"
    />
  );
}
