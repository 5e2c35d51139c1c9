// `npm run bench`: starts its own network (bench/network.ts: two relays in two regions, two
// gateways) and fleet (bench/fleet/), measures the figures of issue 13 and prints one table with
// ratios against anchors measured in the same run (direct loopback, tinyproxy, dante, rathole).
// Writes bench/results/latest.md and bench/results/latency.svg. `--smoke` (the test in
// test/bench-smoke.test.ts) is a small fleet, a few seconds of each figure, no anchors but direct
// and figure 1's bare ws server, results under --out.
//   npm run bench                      # full: 16,000 sockets, 2,000 endpoints, 1,000 customers; 18-22 min
//   npm run bench -- --smoke --out DIR # seconds
//   npm run bench -- --memory-only     # figure 1 only: relay memory per idle socket, idle CPU
//   npm run bench -- --soak-only       # figure 4 only (bench/soak.ts) on a small fleet
//   npm run bench -- --faults-only     # figure 5 only (bench/faults.ts): relay, gateway, Redis
//   npm run bench -- --throughput-only # figure 3 only on a small fleet: direct and rathole anchors
//   npm run bench -- --setup-only      # figure 2's c=1, middle concurrency and paced customers on a small fleet
// The -only runs print their table and write nothing.
// Knobs (environment): BENCH_DEVICES (2000), BENCH_SOCKETS (8 per device), BENCH_STAGE1_DEVICES
// (625: the 5,000-socket step), BENCH_CONCURRENCY (1000), BENCH_REQUESTS (3000),
// BENCH_THINK_SECONDS (4: the paced customers' mean pause), BENCH_PACED_SECONDS (20), BENCH_IDLE_SECONDS
// (30), BENCH_TUNNEL_MIB (100), BENCH_TUNNEL_PAIRS (3: figure 3 headline runs, each
// beside one of its anchor), BENCH_FLEET_PROCS (2), BENCH_MISBEHAVING (0.05: share of devices
// with a slow, stalling or TLS-dropping exit, or flapping, in the listing figure).
// Soak: BENCH_SOAK_TUNNELS (10000), BENCH_SOAK_CONCURRENCY (64), BENCH_SOAK_KIB (64: largest
// payload each way), BENCH_SOAK_SETTLE_SECONDS (32), BENCH_ONLY_DEVICES (50: the fleet of a
// --soak-only, --faults-only or --throughput-only run). Faults: BENCH_FAULT_DEVICES (625) x BENCH_FAULT_SOCKETS (8) on
// the relay that is killed, BENCH_RELAY_RESTART_MS (1000: the supervisor's delay),
// BENCH_FAULT_CONCURRENCY (16 customers), BENCH_HELD_TUNNELS (20 on the gateway that is killed),
// BENCH_REDIS_DOWN_MS (1000), BENCH_RELAY_DOWN_MS (120000: fault d, a relay left down),
// BENCH_FAULTS ("abcd": which faults run; the smoke's default is "abc").
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { killAllNow, type Service, startProcess } from "../dev/proc.ts";
import { MAX_TARGET_BYTES } from "../prober/target.ts";
import { keys } from "../shared/keys.ts";
import {
  type Anchor,
  buildRathole,
  startDanteAnchor,
  startRatholeAnchor,
  startTinyproxyAnchor,
} from "./anchors.ts";
import {
  type FaultSettings,
  gatewayKillFigure,
  redisRestartFigure,
  relayKillFigure,
  relayLeftDownFigure,
} from "./faults.ts";
import {
  allProcessCpu,
  type LatencyRun,
  latencyRun,
  percentile,
  procStats,
  type Route,
  stealMeter,
  type Target,
  thinkTimeRun,
  threadCpu,
  throughput,
} from "./measure.ts";
import { type BenchNetwork, startBenchNetwork } from "./network.ts";
import { fmtMs, fmtRate, latencySvg, markdownTable, type Row, ratio, type Series } from "./report.ts";
import {
  fullGc,
  inspectorUrl,
  perfWindow,
  profileWindow,
  type SoakSettings,
  scrapeMetric,
  soakFigure,
} from "./soak.ts";

const root = join(import.meta.dirname, "..");
const args = process.argv.slice(2);
const smoke = args.includes("--smoke");
const only = (
  ["--memory-only", "--soak-only", "--faults-only", "--throughput-only", "--setup-only"] as const
).find((f) => args.includes(f));
const outDir = args.includes("--out") ? args[args.indexOf("--out") + 1]! : join(root, "bench", "results");
const num = (name: string, full: number, small: number) =>
  Number(process.env[name] ?? (smoke ? small : full));
const cfg = {
  devices: num("BENCH_DEVICES", 2000, 20),
  sockets: num("BENCH_SOCKETS", 8, 2),
  stage1Devices: num("BENCH_STAGE1_DEVICES", 625, 10),
  concurrency: num("BENCH_CONCURRENCY", 1000, 4),
  midConcurrency: num("BENCH_MID_CONCURRENCY", 50, 2),
  requests: num("BENCH_REQUESTS", 3000, 40),
  // Figure 2's paced customers: BENCH_CONCURRENCY of them, each pausing this long on average
  // between streams, for this long.
  thinkSeconds: num("BENCH_THINK_SECONDS", 4, 1),
  pacedSeconds: num("BENCH_PACED_SECONDS", 20, 3),
  idleSeconds: num("BENCH_IDLE_SECONDS", 30, 2),
  tunnelMiB: num("BENCH_TUNNEL_MIB", 100, 4),
  // Figure 3's headline: this many one-tunnel runs of the lone device, each followed by one of
  // rathole's websocket anchor (interleaved pairs: the host's load drifts within a minute).
  tunnelPairs: num("BENCH_TUNNEL_PAIRS", 3, 1),
  fleetProcs: num("BENCH_FLEET_PROCS", 2, 1),
  misbehaving: num("BENCH_MISBEHAVING", 0.05, 0.2),
  onlyDevices: num("BENCH_ONLY_DEVICES", 50, 10),
  faultDevices: num("BENCH_FAULT_DEVICES", 625, 4),
  faultSockets: num("BENCH_FAULT_SOCKETS", 8, 2),
};
// One tunnel is one GET from the bench's target, which serves at most MAX_TARGET_BYTES a request.
if (!(cfg.tunnelMiB >= 1 && cfg.tunnelMiB * 1048576 <= MAX_TARGET_BYTES)) {
  console.error(
    `BENCH_TUNNEL_MIB=${process.env.BENCH_TUNNEL_MIB}: one tunnel is one GET from the bench target, which serves 1 to ${MAX_TARGET_BYTES / 1048576} MiB`,
  );
  process.exit(2);
}
/** BENCH_FAULTS: which of figure 5's faults run (default all: "abcd"; the smoke skips d, a minute long). */
const faultsToRun = process.env.BENCH_FAULTS ?? (smoke ? "abc" : "abcd");
const soak: SoakSettings = {
  tunnels: num("BENCH_SOAK_TUNNELS", 10_000, 40),
  concurrency: num("BENCH_SOAK_CONCURRENCY", 64, 8),
  maxBytes: num("BENCH_SOAK_KIB", 64, 16) * 1024,
  // Past the relay's 30 s linger (relay-node/tunnels.ts LINGER_MS) of an ended tunnel's socket that
  // the gateway has not closed yet: sooner, such sockets read as growth.
  settleMs: num("BENCH_SOAK_SETTLE_SECONDS", 32, 0.5) * 1000,
};
const faults: FaultSettings = {
  relayRestartMs: num("BENCH_RELAY_RESTART_MS", 1000, 1000),
  recoveryTimeoutMs: 60_000,
  // Past two relay checks 30 s apart (the first may still see the dead relay listed alive).
  relayDownMs: num("BENCH_RELAY_DOWN_MS", 120_000, 90_000),
  loadConcurrency: num("BENCH_FAULT_CONCURRENCY", 16, 2),
  heldTunnels: num("BENCH_HELD_TUNNELS", 20, 2),
  // The full run waits out the hold lease (30 s) to see the holds swept; the smoke reads expiries.
  lapseWaitMs: smoke ? 0 : 45_000,
  redisDownMs: num("BENCH_REDIS_DOWN_MS", 1000, 500),
  relayWriteWaitMs: smoke ? 0 : 15_000,
  aroundMs: smoke ? 500 : 2_000,
};
const log = (msg: string) => console.log(`[bench] ${msg}`);
process.on("exit", killAllNow);
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => process.exit(130));

const fdLimit = Number(/Max open files\s+(\d+)/.exec(readFileSync("/proc/self/limits", "utf8"))?.[1] ?? 0);
log(`settings ${JSON.stringify(cfg)}; open-file limit ${fdLimit}`);
// On a shared host the hypervisor may give this machine's cores to others: the table says how much.
const runSteal = stealMeter();
// rathole takes minutes to build on 2 cores: start now, await when its anchor is due.
const ratholeBuilt =
  smoke || (only && only !== "--throughput-only") ? Promise.resolve("skipped") : buildRathole();

// Relays and gateways run with their inspector on loopback so memory figures can also be read
// after a full GC (HeapProfiler.collectGarbage): RSS growth alone counts V8's garbage and headroom.
// Two of each (the faults kill one); figures 1-3 measure the first relay and the first gateway.
// With BENCH_PERF_DIR each also writes /tmp/perf-<pid>.map, so perf names its JavaScript frames.
const inspect = {
  NODE_OPTIONS: `--inspect=127.0.0.1:0${process.env.BENCH_PERF_DIR ? " --perf-basic-prof-only-functions" : ""}`,
};
// As deployed (deploy/systemd/, deploy/fly/): relays and gateways on jemalloc, which purges freed
// pages on a background thread, with two arenas should a process fall back to glibc's malloc;
// figure 1's bare-ws anchor too (docs/adr/0034). BENCH_MALLOC=glibc leaves the preload out, for an
// A/B of the allocator.
const deployedMalloc: Record<string, string> =
  process.env.BENCH_MALLOC === "glibc"
    ? { MALLOC_ARENA_MAX: "2" }
    : { LD_PRELOAD: "libjemalloc.so.2", MALLOC_CONF: "background_thread:true", MALLOC_ARENA_MAX: "2" };
/** The malloc a process runs on, from its mappings: a preload the loader could not find leaves glibc's. */
const allocatorOf = (pid: number) =>
  /\/libjemalloc\.so/.test(readFileSync(`/proc/${pid}/maps`, "utf8")) ? "jemalloc" : "glibc malloc";
// BENCH_RELAY_NODE_OPTIONS adds to the relays' NODE_OPTIONS, e.g. "--cpu-prof --cpu-prof-dir=DIR"
// (a profile per relay process, written when it stops: the restarted relay of fault a included);
// BENCH_GATEWAY_NODE_OPTIONS the same for the gateways.
const relayNodeOptions = `${inspect.NODE_OPTIONS} ${process.env.BENCH_RELAY_NODE_OPTIONS ?? ""}`.trim();
const net: BenchNetwork = await startBenchNetwork({
  relayEnv: { ...inspect, NODE_OPTIONS: relayNodeOptions, ...deployedMalloc },
  gatewayEnv: {
    NODE_OPTIONS: `${inspect.NODE_OPTIONS} ${process.env.BENCH_GATEWAY_NODE_OPTIONS ?? ""}`.trim(),
    ...deployedMalloc,
  },
  relays: only === "--memory-only" ? 1 : 2,
  gateways: only === "--memory-only" ? 1 : 2,
  echo: process.env.BENCH_VERBOSE === "1",
});
for (const edge of [...net.relays, ...net.gateways]) inspectorUrl(edge.service);
const relay = net.relays[0]!;
const gateway = net.gateways[0]!;
const relayPid = relay.service.child.pid!;
const fleets: Service[] = [];
// The devices' state files (one refresh token each): tmpfs when there is one, removed at the end.
const fleetStateDir = join(existsSync("/dev/shm") ? "/dev/shm" : net.dir, `peerproxy-bench-${process.pid}`);
process.on("exit", () => rmSync(fleetStateDir, { recursive: true, force: true }));
const rows: Row[] = [];

// Plain or labelled by protocol (relay_sockets{protocol="flow-v1"} N): the sum either way.
const relaySockets = () => scrapeMetric(relay.metrics, "relay_sockets");

/** The bench target by address, the bench customer through the first gateway, and the target direct. */
function customerRoutes() {
  const target: Target = { host: "127.0.0.1", port: net.httpTarget.port };
  const viaGateway: Extract<Route, { kind: "http-connect" }> = {
    kind: "http-connect",
    port: gateway.httpPort,
    auth: `${net.customer.user}:${net.customer.secret}`,
  };
  const direct: Route = { kind: "direct", port: net.httpTarget.port };
  return { target, viaGateway, direct };
}

/**
 * `--setup-only`: figure 2's CONNECT setup at concurrency 1, the middle concurrency and with the
 * paced customers, peerproxy against direct loopback, with the setup rate: quick enough to run
 * under --cpu-prof.
 */
async function setupFigure(): Promise<Row[]> {
  const { target, viaGateway, direct } = customerRoutes();
  const out: Row[] = [];
  const runs = {
    peerproxy: { c1: [] as number[], cMid: [] as number[], paced: [] as number[], rate: 0, cpu: "" },
    direct: { c1: [] as number[], cMid: [] as number[], paced: [] as number[], rate: 0, cpu: "" },
  };
  for (const [name, route] of [
    ["peerproxy", viaGateway],
    ["direct", direct],
  ] as const) {
    const before = name === "peerproxy" ? await setupClocks() : undefined;
    const c1 = await latencyRun({ route, target, concurrency: 1, requests: 300, bytes: 64 });
    if (before) log(`where c=1 setup goes (means): ${setupBreakdown(c1, before, await setupClocks())}`);
    await net.redis.raw.config("RESETSTAT");
    const cpu = cpuMeter(name === "peerproxy" ? undefined : [], await redisPid());
    const cMid = await profiled(name === "peerproxy" ? `setup-c${cfg.midConcurrency}` : undefined, () =>
      latencyRun({ route, target, concurrency: cfg.midConcurrency, requests: 2000, bytes: 64 }),
    );
    const stats = String(await net.redis.raw.info("commandstats"));
    if (name === "peerproxy")
      log(`Redis per stream at c=${cfg.midConcurrency}: ${redisCosts(stats, cMid.setup.length)}`);
    const perStream = cpu.perStream(cMid.setup.length);
    const paced = await pacedRun(name, route, target);
    runs[name] = {
      c1: c1.setup,
      cMid: cMid.setup,
      paced: paced.setup,
      rate: cMid.setup.length / cMid.seconds,
      cpu: perStream,
    };
    log(`${name}: errors ${c1.errors + cMid.errors}${cMid.firstError ? ` (${cMid.firstError})` : ""}`);
  }
  for (const [label, key] of [
    ["concurrency 1", "c1"],
    [`concurrency ${cfg.midConcurrency}`, "cMid"],
    [pacedLabel(runs.peerproxy.paced, "peerproxy"), "paced"],
  ] as const) {
    const mine = runs.peerproxy[key];
    const theirs = runs.direct[key];
    out.push({
      figure: `CONNECT setup p50 / p99, ${label}`,
      value: `${fmtMs(percentile(mine, 50))} / ${fmtMs(percentile(mine, 99))}`,
      anchor: `direct ${fmtMs(percentile(theirs, 50))} / ${fmtMs(percentile(theirs, 99))}`,
      ratio: ratio(percentile(mine, 50), percentile(theirs, 50)),
      goal: "-",
    });
  }
  out.push({
    figure: `streams opened per second, concurrency ${cfg.midConcurrency} (with a 64-byte GET each)`,
    value: runs.peerproxy.rate.toFixed(0),
    anchor: `direct ${runs.direct.rate.toFixed(0)}`,
    ratio: ratio(runs.peerproxy.rate, runs.direct.rate),
    goal: "-",
  });
  out.push({
    figure: `CPU milliseconds and write system calls per stream at concurrency ${cfg.midConcurrency}, by process`,
    value: runs.peerproxy.cpu,
    anchor: `direct ${runs.direct.cpu}`,
    ratio: "-",
    goal: "reported",
  });
  return out;
}

/**
 * Figure 2's paced customers on one route (thinkTimeRun): BENCH_CONCURRENCY customers, each
 * pausing BENCH_THINK_SECONDS on average between streams. Where the closed loops measure how many
 * streams the machine opens and the queue in front of it, this is the latency of a proxy serving
 * that many customers at a rate it can take. For peerproxy, logs where the slow setups waited.
 */
async function pacedRun(name: string, route: Route, target: Target): Promise<LatencyRun> {
  const mine = route.kind === "http-connect" && route.port === gateway.httpPort;
  await quiet(`${name}'s paced run`);
  const before = mine ? await setupClocks() : undefined;
  const gc = mine ? await gcClock() : undefined;
  if (mine) {
    // Redis is one thread: a long call of anything (the listing cron, presence) delays every select.
    await net.redis.raw.config("SET", "slowlog-log-slower-than", "2000");
    await net.redis.raw.call("SLOWLOG", "RESET");
  }
  const procs = allProcessCpu();
  const steal = stealMeter();
  const t0 = performance.now();
  const run = await thinkTimeRun({
    route,
    target,
    customers: cfg.concurrency,
    thinkMs: cfg.thinkSeconds * 1000,
    seconds: cfg.pacedSeconds,
    bytes: 64,
  });
  log(
    `${name}, ${cfg.concurrency} paced customers: ${(run.setup.length / run.seconds).toFixed(0)} streams/s, setup p50 ${fmtMs(percentile(run.setup, 50))} p90 ${fmtMs(percentile(run.setup, 90))} p99 ${fmtMs(percentile(run.setup, 99))}, errors ${run.errors}${run.firstError ? ` (${run.firstError})` : ""}`,
  );
  const cpu = cpuSince(procs, (performance.now() - t0) / 1000);
  log(
    `${name}, paced: ${cpu.total.toFixed(2)} cores busy on average, everything on the machine; busiest ${cpu.busiest}; steal ${(steal.stolen() * 100).toFixed(1)} %`,
  );
  if (before && gc) {
    log(`setups over 10 ms, paced: ${slowSetups(run, before, await setupClocks())}; ${await gc.total()}`);
    log(`Redis calls over 2 ms during the paced run: ${await redisSlowCalls()}`);
  }
  return run;
}

/** SLOWLOG since its reset, summed by command and first key: calls, longest, total ms. */
async function redisSlowCalls(): Promise<string> {
  const entries = (await net.redis.raw.call("SLOWLOG", "GET", "1000")) as [
    number,
    number,
    number,
    string[],
  ][];
  const by = new Map<string, { n: number; max: number; sum: number }>();
  for (const [, , usec, args] of entries) {
    // EVALSHA sha numkeys key...: the first key names the script's family.
    const what =
      args[0]?.toLowerCase() === "evalsha" ? `evalsha ${args[3] ?? ""}` : `${args[0]} ${args[1] ?? ""}`;
    const k = what.replace(/[0-9a-f]{8,}|\d{4,}/g, "*").slice(0, 60);
    const e = by.get(k) ?? { n: 0, max: 0, sum: 0 };
    by.set(k, { n: e.n + 1, max: Math.max(e.max, usec / 1000), sum: e.sum + usec / 1000 });
  }
  const top = [...by].sort((a, b) => b[1].sum - a[1].sum).slice(0, 6);
  return top.length
    ? top.map(([k, e]) => `${k}: ${e.n} calls, longest ${fmtMs(e.max)}, ${fmtMs(e.sum)} in all`).join("; ")
    : "none";
}

/** The paced run's label: how many customers, their mean pause, and the rate peerproxy saw. */
function pacedLabel(setups: number[], name: string): string {
  const rate = setups.length / cfg.pacedSeconds;
  return `${cfg.concurrency.toLocaleString("en")} customers pausing ${cfg.thinkSeconds} s on average between streams (${name} ${rate.toFixed(0)} streams/s)`;
}

/**
 * BENCH_PROFILE_DIR=DIR: CPU profiles of the gateway, the relays and the fleet processes over one
 * stretch of peerproxy's traffic (`label`; undefined for an anchor's), as
 * DIR/<label>-<process>.cpuprofile; nothing without it. BENCH_PERF_DIR=DIR: the same stretch's
 * on-CPU samples by `perf record`, as DIR/<label>-<process>.txt (symbols by self time).
 */
async function profiled<T>(label: string | undefined, run: () => Promise<T>): Promise<T> {
  const dir = process.env.BENCH_PROFILE_DIR;
  const perfDir = process.env.BENCH_PERF_DIR;
  if ((!dir && !perfDir) || !label) return run();
  const services: [string, Service][] = [
    [`${label}-gateway`, gateway.service],
    ...net.relays.map((r, i) => [`${label}-relay-${i + 1}`, r.service] as [string, Service]),
    ...fleets.map((f, i) => [`${label}-fleet-${i + 1}`, f] as [string, Service]),
  ];
  const windows = [
    ...(dir ? [await profileWindow(services, dir)] : []),
    ...(perfDir
      ? [
          await perfWindow(
            services.map(([name, s]) => [name, s.child.pid!] as [string, number]),
            perfDir,
          ),
        ]
      : []),
  ];
  try {
    return await run();
  } finally {
    for (const w of windows) log(`profiles: ${(await w.stop()).join(", ")}`);
  }
}

/** The pid of the bench's redis-server (its CPU is part of every stream's cost). */
async function redisPid(): Promise<number | undefined> {
  const info = String(await net.redis.raw.info("server"));
  return Number(/process_id:(\d+)/.exec(info)?.[1]) || undefined;
}

/**
 * Sums and counts of the first gateway's and relay's setup histograms (seconds), and how many
 * took longer than 10 ms (the count less the 10 ms bucket's).
 */
async function setupClocks() {
  // A labelled histogram has no series before its first observation: zero then.
  const read = async (url: string, name: string) => ({
    sum: (await scrapeMetric(url, `${name}_sum`)) || 0,
    count: (await scrapeMetric(url, `${name}_count`)) || 0,
    within10ms: (await scrapeMetric(url, `${name}_bucket`, { le: "0.01" })) || 0,
  });
  return {
    tunnel: await read(gateway.metrics, "gateway_tunnel_setup_seconds"),
    select: await read(gateway.metrics, "gateway_select_endpoint_seconds"),
    peer: await read(relay.metrics, "relay_tunnel_setup_seconds"),
    /** streams whose login went out beside their lease and pick (ADR 0033) */
    guessed:
      (await scrapeMetric(gateway.metrics, "gateway_login_guesses_total", { outcome: "confirmed" })) || 0,
  };
}
type SetupClocks = Awaited<ReturnType<typeof setupClocks>>;

/**
 * Mean milliseconds per stream of one run: the customer's whole setup, the gateway's part (byte
 * lease, select, exit; for a key it has let in before, the login too, which goes out beside them:
 * ADR 0033), the select script within it, and the relay's wait for the peer (tunnel_connect to its
 * answer: the peer's dial of the target).
 */
function setupBreakdown(run: LatencyRun, a: SetupClocks, b: SetupClocks): string {
  const mean = (k: "tunnel" | "select" | "peer") =>
    ((b[k].sum - a[k].sum) / Math.max(1, b[k].count - a[k].count)) * 1000;
  const customer = run.setup.reduce((x, y) => x + y, 0) / Math.max(1, run.setup.length);
  return [
    `customer ${fmtMs(customer)}`,
    `gateway's part ${fmtMs(mean("tunnel"))}`,
    `select ${fmtMs(mean("select"))}`,
    `relay waiting for the peer ${fmtMs(mean("peer"))}`,
    `logins sent with the lease and pick ${b.guessed - a.guessed} of ${run.setup.length}`,
  ].join(", ");
}

/**
 * Where one run's slow setups (over 10 ms) were slow: as the customer saw them, and the stages
 * of setupBreakdown that took that long. Slow customers beyond the gateway's slow stages waited
 * before the gateway's clock starts (accept, request head, authentication) or after it stops (the
 * 200 reaching the customer), or in the customer's own event loop.
 */
function slowSetups(run: LatencyRun, a: SetupClocks, b: SetupClocks): string {
  const slow = (k: "tunnel" | "select" | "peer") =>
    b[k].count - a[k].count - (b[k].within10ms - a[k].within10ms);
  return [
    `customer ${run.setup.filter((ms) => ms > 10).length} of ${run.setup.length}`,
    `gateway's part ${slow("tunnel")}`,
    `select ${slow("select")}`,
    `relay waiting for the peer ${slow("peer")}`,
    `logins sent with the lease and pick ${b.guessed - a.guessed} of ${run.setup.length}`,
  ].join(", ");
}

/** `INFO commandstats` as calls and µs inside Redis per stream, costliest first. */
function redisCosts(info: string, streams: number): string {
  const rows = [...info.matchAll(/^cmdstat_(\w+):calls=(\d+),usec=(\d+)/gm)].map((m) => ({
    cmd: m[1]!,
    calls: Number(m[2]) / streams,
    usec: Number(m[3]) / streams,
  }));
  rows.sort((a, b) => b.usec - a.usec);
  const total = rows.reduce((a, r) => a + r.usec, 0);
  return `${total.toFixed(0)} µs; ${rows
    .slice(0, 8)
    .map((r) => `${r.cmd} ${r.calls.toFixed(2)} calls ${r.usec.toFixed(0)} µs`)
    .join(", ")}`;
}

/** Starts `devices` simulated devices split over `procs` processes; resolves with their ids. */
async function startFleetProcs(
  prefix: string,
  devices: number,
  procs: number,
  misbehaviour: Record<string, number> = {},
  placement: { countries: Record<string, number>; sockets: number } = {
    countries: { US: 1 },
    sockets: cfg.sockets,
  },
): Promise<{ id: string; behaviour: string; flapping: boolean }[]> {
  const ids: { id: string; behaviour: string; flapping: boolean }[] = [];
  const per = Math.ceil(devices / procs);
  const started = [];
  for (let p = 0; p * per < devices; p++) {
    const idsFile = join(net.dir, `${prefix}-${p}.json`);
    const settings = {
      apiUrl: net.api.url,
      apiKey: net.supplierKey,
      devices: Math.min(per, devices - p * per),
      socketsPerDevice: placement.sockets,
      countries: placement.countries,
      misbehaviour,
      stateDir: join(fleetStateDir, `${prefix}-${p}`),
      namePrefix: `${prefix}-${p}`,
      concurrency: 16,
    };
    const svc = startProcess(
      `fleet-${prefix}-${p}`,
      process.execPath,
      [join(root, "bench", "fleet", "main.ts")],
      {
        cwd: root,
        env: {
          FLEET_SETTINGS: JSON.stringify(settings),
          FLEET_IDS_FILE: idsFile,
          FLEET_EVENTS_FILE: join(net.dir, `${prefix}-${p}-failover.jsonl`),
          // e.g. "--cpu-prof --cpu-prof-dir=DIR": the SDK's side of a reconnect storm; the
          // inspector (loopback) serves BENCH_PROFILE_DIR's profiles of one figure
          NODE_OPTIONS: `${inspect.NODE_OPTIONS} ${process.env.BENCH_FLEET_NODE_OPTIONS ?? ""}`.trim(),
        },
      },
    );
    fleets.push(svc);
    started.push(
      svc
        .waitFor(/Debugger listening on/, 30_000)
        .then(() => inspectorUrl(svc))
        .then(() => svc.waitFor(/fleet connected sockets=\d+/, 600_000))
        .then(() => ids.push(...JSON.parse(readFileSync(idsFile, "utf8")))),
    );
  }
  await Promise.all(started);
  return ids;
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface MemoryReading {
  sockets: number;
  /** RSS as found (garbage and V8's headroom included) */
  rssKiB: number;
  /** RSS and the V8 heap in use after a full GC (HeapProfiler.collectGarbage) */
  gcRssKiB: number;
  heapKiB: number;
}

/** A process's RSS now, its RSS and V8 heap after a full GC, and the sockets it holds. */
async function memoryOf(service: Service, sockets: () => Promise<number>): Promise<MemoryReading> {
  const pid = service.child.pid!;
  const rssKiB = procStats(pid).rssKiB;
  const heapKiB = await fullGc(service);
  return { rssKiB, gcRssKiB: procStats(pid).rssKiB, heapKiB, sockets: await sockets() };
}
const relayMemory = () => memoryOf(relay.service, relaySockets);

/** A process's RSS once a second for `seconds` (KiB): what it holds through a stretch, its own GCs and all. */
async function rssThrough(pid: number, seconds: number): Promise<{ median: number; peak: number }> {
  const samples: number[] = [];
  for (let i = 0; i < seconds; i++) {
    await settle(1000);
    samples.push(procStats(pid).rssKiB);
  }
  samples.sort((a, b) => a - b);
  return { median: samples[(samples.length - 1) >> 1] ?? Number.NaN, peak: samples.at(-1) ?? Number.NaN };
}

/** The failover-event files (FLEET_EVENTS_FILE) of one fleet's processes. */
const fleetEventFiles = (dir: string, prefix: string) =>
  readdirSync(dir)
    .filter((f) => f.startsWith(`${prefix}-`) && f.endsWith("-failover.jsonl"))
    .map((f) => join(dir, f));

/** The fleet the first fault kills a relay under: its own devices, placed in the second region. */
const startFaultFleet = () =>
  startFleetProcs(
    "f",
    cfg.faultDevices,
    Math.min(cfg.fleetProcs, Math.ceil(cfg.faultDevices / 200)),
    {},
    { countries: { DE: 1 }, sockets: cfg.faultSockets },
  );

/** Figure 5 (last: it kills a relay and a gateway and restarts Redis); a fault that throws is a row. */
async function faultFigures(faultFleet: Promise<{ id: string }[]>): Promise<Row[]> {
  const ids = (await faultFleet).map((d) => d.id);
  const listed = await net.waitListed(ids, smoke ? 30_000 : 300_000);
  log(`fault fleet: ${listed} of ${ids.length} devices listed`);
  const out: Row[] = [];
  const figures: [string, () => Promise<Row[]>][] = [
    ["a", () => relayKillFigure(net, { ids, socketsPerDevice: cfg.faultSockets }, faults, log)],
    ["b", () => gatewayKillFigure(net, faults, log)],
    ["c", () => redisRestartFigure(net, faults, log)],
    [
      "d",
      () =>
        relayLeftDownFigure(
          net,
          { ids, socketsPerDevice: cfg.faultSockets, eventFiles: () => fleetEventFiles(net.dir, "f") },
          faults,
          log,
        ),
    ],
  ];
  for (const [name, figure] of figures.filter(([n]) => faultsToRun.includes(n)))
    out.push(
      ...(await figure().catch((err: Error) => {
        log(`fault ${name} failed: ${err.stack ?? err.message}`);
        return [
          { figure: `fault ${name}`, value: `failed: ${err.message}`, anchor: "-", ratio: "-", goal: "-" },
        ];
      })),
    );
  return out;
}

// Every -only run but --memory-only: that figure alone, on a small fleet of its own.
if (only && only !== "--memory-only") {
  const faultFleet = only === "--faults-only" ? startFaultFleet() : undefined;
  const traffic = await startFleetProcs("t", cfg.onlyDevices, 1);
  log(
    `${await net.waitListed(
      traffic.map((d) => d.id),
      120_000,
    )} of ${traffic.length} traffic devices listed`,
  );
  if (faultFleet) rows.push(...(await faultFigures(faultFleet)));
  else if (only === "--soak-only") rows.push(...(await soakFigure(net, soak, log, fleets)).rows);
  else if (only === "--setup-only") rows.push(...(await setupFigure()));
  else {
    // The headline's device alone in its SDK process, as in the full run.
    const lone = await startFleetProcs("lone", 1, 1);
    const loneListed = await net.waitListed(
      lone.map((d) => d.id),
      120_000,
    );
    const figure = await throughputFigure(
      traffic,
      [["direct loopback", customerRoutes().direct]],
      loneListed === 1 ? { id: lone[0]!.id, pid: fleets[fleets.length - 1]!.child.pid! } : undefined,
    );
    rows.push(...figure.rows);
    for (const a of Object.values(figure.rathole)) if (a.ok) await a.stop();
  }
  console.log(`\n${markdownTable(rows)}\n`);
  for (const f of fleets) await f.stop();
  await net.stop();
  process.exit(0);
}

// The smoke registers the fault fleet now, beside figure 1 (on the other relay), to stay short;
// the full run after the soak, so its registrations and probes overlap no timed figure.
const earlyFaultFleet = smoke ? startFaultFleet() : undefined;
earlyFaultFleet?.catch(() => {}); // awaited (and reported) by faultFigures

// --- Figure 1: relay memory per idle authenticated socket, and heartbeat CPU ------------------
// Each reading is taken after a full GC too, against a baseline taken after one: RSS growth per
// socket (what the machine pays), the same after the GC, and the V8 heap after it (what the
// relay's JavaScript holds; the rest of RSS is native: libuv handles, malloc, V8's page slack).
// Anchor: a bare `ws` server (bench/bare-ws.ts: no application code, same ws options, same
// heartbeats) holding the same numbers of sockets, measured the same way in the same run: the floor
// that ws + net.Socket + libuv set under the relay's figure.
interface MemoryStep {
  sockets: number;
  perSocketKiB: number;
  gcPerSocketKiB: number;
  heapPerSocketKiB: number;
}
const stepFrom = (base: MemoryReading, m: MemoryReading): MemoryStep => {
  const added = m.sockets - base.sockets;
  return {
    sockets: m.sockets,
    // From the baseline after a full GC: a clean start for every reading.
    perSocketKiB: (m.rssKiB - base.gcRssKiB) / added,
    gcPerSocketKiB: (m.gcRssKiB - base.gcRssKiB) / added,
    heapPerSocketKiB: (m.heapKiB - base.heapKiB) / added,
  };
};
const fmtStep = (m: MemoryStep) =>
  `${m.perSocketKiB.toFixed(2)} / ${m.gcPerSocketKiB.toFixed(2)} KiB (heap ${m.heapPerSocketKiB.toFixed(2)})`;
/** What one more socket costs between two steps, once the fixed growth (heap pages, maps, Redis buffers) is paid. */
const marginal = (m1: MemoryStep, m2: MemoryStep, base: number): MemoryStep => {
  const per = (a: number, b: number) =>
    (b * (m2.sockets - base) - a * (m1.sockets - base)) / (m2.sockets - m1.sockets);
  return {
    sockets: m2.sockets,
    perSocketKiB: per(m1.perSocketKiB, m2.perSocketKiB),
    gcPerSocketKiB: per(m1.gcPerSocketKiB, m2.gcPerSocketKiB),
    heapPerSocketKiB: per(m1.heapPerSocketKiB, m2.heapPerSocketKiB),
  };
};

// Warm the relay first (modules, JIT, Redis pipelines), so the growth measured is per socket.
await startFleetProcs("warm", 4, 1);
await settle(3_000);
const base = await relayMemory();
log(
  `relay baseline: ${base.rssKiB} KiB RSS (${base.gcRssKiB} after a full GC, heap ${base.heapKiB.toFixed(0)}), ${base.sockets} sockets`,
);
const memSteps: MemoryStep[] = [];
const step = async () => {
  await settle(smoke ? 1_000 : 10_000);
  const m = await relayMemory();
  memSteps.push(stepFrom(base, m));
  log(
    `relay at ${m.sockets} sockets: ${m.rssKiB} KiB RSS (${m.gcRssKiB} after a full GC, heap ${m.heapKiB.toFixed(0)})`,
  );
};
const stage1 = await startFleetProcs("s1", cfg.stage1Devices, cfg.fleetProcs);
await step();
const stage2 = await startFleetProcs("s2", cfg.devices - cfg.stage1Devices, cfg.fleetProcs);
await step();
const cpu0 = procStats(relayPid).cpuSeconds;
// The idle stretch starts right after the last step's full GC; the relay's own collections,
// heartbeats and presence refreshes run through it.
const idleRss = await rssThrough(relayPid, cfg.idleSeconds);
const idleCpu = (procStats(relayPid).cpuSeconds - cpu0) / cfg.idleSeconds;
log(`relay idle for ${cfg.idleSeconds} s: RSS median ${idleRss.median} KiB, peak ${idleRss.peak} KiB`);

/** The anchor: the same socket counts on a bare ws server, after the relay's figures (no overlap). */
async function bareWsFigure(counts: number[]): Promise<{
  steps: MemoryStep[];
  idleCpu: number;
  base: number;
  baseGcRssKiB: number;
  idleRss: { median: number; peak: number };
}> {
  const script = join(root, "bench", "bare-ws.ts");
  const server = startProcess("bare-ws", process.execPath, ["--inspect=127.0.0.1:0", script, "server"], {
    cwd: root,
    env: deployedMalloc,
  });
  const clients: Service[] = [];
  try {
    const port = (await server.waitFor(/bare-ws listening port=(\d+)/))[1]!;
    const url = `ws://127.0.0.1:${port}/`;
    const open = async () => Number(await (await fetch(`http://127.0.0.1:${port}/`)).text());
    const connect = async (n: number) => {
      const c = startProcess(
        `bare-ws-clients-${clients.length}`,
        process.execPath,
        [script, "clients", url, String(n)],
        {
          cwd: root,
        },
      );
      clients.push(c);
      await c.waitFor(/bare-ws connected sockets=\d+/, 300_000);
    };
    await connect(counts[0]!); // the relay's warm-up sockets
    await settle(3_000);
    const bareBase = await memoryOf(server, open);
    const steps: MemoryStep[] = [];
    for (const target of counts.slice(1)) {
      await connect(Math.max(0, target - (await open())));
      await settle(smoke ? 1_000 : 10_000);
      const m = await memoryOf(server, open);
      log(
        `bare ws at ${m.sockets} sockets: ${m.rssKiB} KiB RSS (${m.gcRssKiB} after a full GC, heap ${m.heapKiB.toFixed(0)})`,
      );
      steps.push(stepFrom(bareBase, m));
    }
    const pid = server.child.pid!;
    const c0 = procStats(pid).cpuSeconds;
    const idleRss = await rssThrough(pid, cfg.idleSeconds);
    return {
      steps,
      idleCpu: (procStats(pid).cpuSeconds - c0) / cfg.idleSeconds,
      base: bareBase.sockets,
      baseGcRssKiB: bareBase.gcRssKiB,
      idleRss,
    };
  } finally {
    for (const c of clients) await c.stop();
    await server.stop();
  }
}
const bare = await bareWsFigure([base.sockets, ...memSteps.map((m) => m.sockets)]).catch((err: Error) => {
  log(`bare ws anchor failed: ${err.message}`);
  return undefined;
});
const relayMalloc = allocatorOf(relayPid);
memSteps.forEach((m, i) => {
  const anchor = bare?.steps[i];
  rows.push({
    figure: `relay memory per idle peer socket (${m.sockets.toLocaleString("en")} sockets): RSS growth / after a full GC (V8 heap after it)`,
    value: `${fmtStep(m)}, ${relayMalloc}`,
    anchor: anchor ? `${fmtStep(anchor)} bare ws, ${anchor.sockets.toLocaleString("en")} sockets` : "-",
    ratio: anchor ? ratio(m.gcPerSocketKiB, anchor.gcPerSocketKiB) : "-",
    goal: "<= 4 KB at 16,000+",
  });
});
// The marginal cost between the two steps: what one more socket costs once the fixed growth
// (heap pages, maps, Redis buffers) is paid; the figure that scales to 200,000.
const [m1, m2] = memSteps;
if (m1 && m2 && m2.sockets > m1.sockets) {
  const m = marginal(m1, m2, base.sockets);
  const [b1, b2] = bare?.steps ?? [];
  const anchor = bare && b1 && b2 && b2.sockets > b1.sockets ? marginal(b1, b2, bare.base) : undefined;
  rows.push({
    figure: `relay memory per idle peer socket, marginal from ${m1.sockets.toLocaleString("en")} to ${m2.sockets.toLocaleString("en")}: RSS / after a full GC (V8 heap after it)`,
    value: `${fmtStep(m)}, ${relayMalloc}`,
    anchor: anchor ? `${fmtStep(anchor)} bare ws` : "-",
    ratio: anchor ? ratio(m.gcPerSocketKiB, anchor.gcPerSocketKiB) : "-",
    goal: "<= 4 KB",
  });
}
// Through the idle stretch: what the relay holds in service, between its own collections.
const last = memSteps.at(-1);
if (last) {
  const per = (kib: number, baseKiB: number, base0: number) => (kib - baseKiB) / (last.sockets - base0);
  const relayIdle = [
    per(idleRss.median, base.gcRssKiB, base.sockets),
    per(idleRss.peak, base.gcRssKiB, base.sockets),
  ];
  const bareIdle = bare
    ? [
        per(bare.idleRss.median, bare.baseGcRssKiB, bare.base),
        per(bare.idleRss.peak, bare.baseGcRssKiB, bare.base),
      ]
    : undefined;
  const fmt = ([median, peak]: number[]) => `${median!.toFixed(2)} / ${peak!.toFixed(2)} KiB`;
  rows.push({
    figure: `relay memory per idle peer socket (${last.sockets.toLocaleString("en")} sockets) through the ${cfg.idleSeconds} s idle stretch after: RSS median / peak of 1 s samples, growth over the baseline after a full GC`,
    value: `${fmt(relayIdle)}, ${relayMalloc}`,
    anchor: bareIdle ? `${fmt(bareIdle)} bare ws` : "-",
    ratio: bareIdle ? ratio(relayIdle[0]!, bareIdle[0]!) : "-",
    goal: "<= 4 KB at 16,000+",
  });
}
rows.push({
  figure: `relay CPU while idle (${(memSteps.at(-1)?.sockets ?? 0).toLocaleString("en")} sockets: heartbeats 30 s, presence 10 s)`,
  value: `${(idleCpu * 100).toFixed(1)} % of a core`,
  anchor: bare ? `${(bare.idleCpu * 100).toFixed(1)} % bare ws (heartbeats only)` : "-",
  ratio: bare ? ratio(idleCpu, bare.idleCpu, 1) : "-",
  goal: "< 10 %",
});

// `--memory-only`: figure 1 alone (the relay's memory work measures itself with it).
if (only === "--memory-only") {
  console.log(`\n${markdownTable(rows)}\n`);
  for (const f of fleets) await f.stop();
  await net.stop();
  process.exit(0);
}

// --- Listing: the prober grades every device, the cron lists them -----------------------------
const endpoints = [...stage1, ...stage2];
const t0 = Date.now();
const listed = await net.waitListed(
  endpoints.map((e) => e.id),
  smoke ? 60_000 : 300_000,
);
log(`${listed} of ${endpoints.length} endpoints listed in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
rows.push({
  figure: "endpoints verified by the prober and listed",
  value: `${listed.toLocaleString("en")} of ${endpoints.length.toLocaleString("en")}`,
  anchor: "-",
  ratio: "-",
  goal: ">= 2,000",
});

// --- Figure 2: CONNECT setup latency -----------------------------------------------------------
// By address, as customers of the demo stack do: the timed figures never meet the fault shims
// (only names resolve to them), and no resolver sits in the measured path.
const { target, viaGateway, direct } = customerRoutes();
const anchors: Record<string, Anchor> = smoke
  ? { tinyproxy: { ok: false, why: "skipped (smoke)" }, dante: { ok: false, why: "skipped (smoke)" } }
  : { tinyproxy: await startTinyproxyAnchor(), dante: await startDanteAnchor() };
const latency: Record<string, { c1: LatencyRun; cMid: LatencyRun; cN: LatencyRun; paced: LatencyRun }> = {};
const routes: [string, Route | undefined][] = [
  ["peerproxy (gateway -> relay -> peer)", viaGateway],
  ["direct loopback", direct],
  ["tinyproxy", anchors.tinyproxy!.ok ? anchors.tinyproxy!.route : undefined],
  ["dante (SOCKS5)", anchors.dante!.ok ? anchors.dante!.route : undefined],
];
let streamCost = "";
for (const [name, route] of routes) {
  if (!route) continue;
  const c1 = await latencyRun({ route, target, concurrency: 1, requests: smoke ? 20 : 300, bytes: 64 });
  const cMid = await latencyRun({
    route,
    target,
    concurrency: cfg.midConcurrency,
    requests: smoke ? 20 : 1000,
    bytes: 64,
  });
  const mine = route === viaGateway;
  const cpu = mine ? cpuMeter(undefined, await redisPid()) : undefined;
  const cN = await profiled(mine ? `setup-c${cfg.concurrency}` : undefined, () =>
    latencyRun({ route, target, concurrency: cfg.concurrency, requests: cfg.requests, bytes: 64 }),
  );
  if (cpu) streamCost = `${(cN.setup.length / cN.seconds).toFixed(0)}/s; ${cpu.perStream(cN.setup.length)}`;
  const paced = await pacedRun(name, route, target);
  latency[name] = { c1, cMid, cN, paced };
  log(
    `${name}: c=1 setup p50 ${fmtMs(percentile(c1.setup, 50))}; c=${cfg.concurrency} setup p50 ${fmtMs(percentile(cN.setup, 50))} p99 ${fmtMs(percentile(cN.setup, 99))}, errors ${cN.errors}${cN.firstError ? ` (${cN.firstError})` : ""}`,
  );
}
const pp = latency["peerproxy (gateway -> relay -> peer)"]!;
const tp = latency.tinyproxy;
const anchorLat = tp ?? latency["direct loopback"]!;
const anchorName = tp ? "tinyproxy" : "direct";
for (const [label, key] of [
  ["concurrency 1", "c1"],
  [`concurrency ${cfg.midConcurrency}`, "cMid"],
  [`concurrency ${cfg.concurrency}`, "cN"],
] as const) {
  for (const [pName, p] of [
    ["p50", 50],
    ["p99", 99],
  ] as const) {
    const mine = percentile(pp[key].setup, p);
    const theirs = percentile(anchorLat[key].setup, p);
    rows.push({
      figure: `CONNECT setup ${pName}, ${label}, ${listed.toLocaleString("en")} endpoints`,
      value: fmtMs(mine) + (pp[key].errors ? ` (${pp[key].errors} errors)` : ""),
      anchor: `${anchorName} ${fmtMs(theirs)}`,
      ratio: ratio(mine, theirs),
      goal: key === "cN" ? (p === 50 ? "<= 5 ms" : "<= 20 ms") : "-",
    });
  }
}
const pacedAs = pacedLabel(pp.paced.setup, "peerproxy");
rows.push({
  figure: `CONNECT setup p50 / p99, ${pacedAs}, ${listed.toLocaleString("en")} endpoints`,
  value:
    `${fmtMs(percentile(pp.paced.setup, 50))} / ${fmtMs(percentile(pp.paced.setup, 99))}` +
    (pp.paced.errors ? ` (${pp.paced.errors} errors)` : ""),
  anchor: `${anchorName} ${fmtMs(percentile(anchorLat.paced.setup, 50))} / ${fmtMs(percentile(anchorLat.paced.setup, 99))}`,
  ratio: ratio(percentile(pp.paced.setup, 50), percentile(anchorLat.paced.setup, 50)),
  goal: "<= 5 ms / <= 20 ms",
});
rows.push({
  figure: `CONNECT + 64-byte GET p50 / p99, ${pacedAs}`,
  value: `${fmtMs(percentile(pp.paced.total, 50))} / ${fmtMs(percentile(pp.paced.total, 99))}`,
  anchor: `${anchorName} ${fmtMs(percentile(anchorLat.paced.total, 50))} / ${fmtMs(percentile(anchorLat.paced.total, 99))}`,
  ratio: ratio(percentile(pp.paced.total, 50), percentile(anchorLat.paced.total, 50)),
  goal: "-",
});
rows.push({
  figure: `CONNECT + 64-byte GET p50 / p99, concurrency ${cfg.concurrency}`,
  value: `${fmtMs(percentile(pp.cN.total, 50))} / ${fmtMs(percentile(pp.cN.total, 99))}`,
  anchor: `${anchorName} ${fmtMs(percentile(anchorLat.cN.total, 50))} / ${fmtMs(percentile(anchorLat.cN.total, 99))}`,
  ratio: ratio(percentile(pp.cN.total, 50), percentile(anchorLat.cN.total, 50)),
  goal: "-",
});
rows.push({
  figure: `streams opened per second at concurrency ${cfg.concurrency}; CPU milliseconds and write system calls per stream, by process (2 cores bound the rate)`,
  value: streamCost,
  anchor: `${anchorName} ${(anchorLat.cN.setup.length / anchorLat.cN.seconds).toFixed(0)}/s`,
  ratio: "-",
  goal: "reported",
});
if (latency["dante (SOCKS5)"]) {
  const d = latency["dante (SOCKS5)"]!;
  rows.push({
    figure: `dante SOCKS5 setup p50 / p99, concurrency ${cfg.concurrency}`,
    value: "-",
    anchor: `${fmtMs(percentile(d.cN.setup, 50))} / ${fmtMs(percentile(d.cN.setup, 99))}`,
    ratio: "-",
    goal: "anchor",
  });
}
for (const [name, a] of Object.entries(anchors))
  if (!a.ok) rows.push({ figure: `${name} anchor`, value: "-", anchor: "missing", ratio: "-", goal: a.why });

// --- Figure 3: throughput ----------------------------------------------------------------------
/**
 * CPU time of every process on the path from now: peerproxy's (gateway, relays, fleet processes)
 * or an anchor's own (`anchorPids`), and this process's (the bench's customer and target);
 * `perGB` reads it as CPU seconds per GB moved, `perStream` as CPU milliseconds per stream opened,
 * each with the write system calls (`/proc/<pid>/io`); `redisPid` adds redis-server's,
 * `fleetPids` narrows the fleet to the processes on the path.
 */
function cpuMeter(anchorPids?: number[], redisPid?: number, fleetPids = fleets.map((f) => f.child.pid!)) {
  type Use = { cpu: number; writes: number };
  const sum = (pids: number[]): Use =>
    pids.reduce(
      (s, pid) => {
        const p = procStats(pid);
        return { cpu: s.cpu + p.cpuSeconds, writes: s.writes + p.writes };
      },
      { cpu: 0, writes: 0 },
    );
  const procs: [string, () => Use][] = [
    ...(anchorPids
      ? [["anchor", () => sum(anchorPids)] as [string, () => Use]]
      : ([
          ["gateway", () => sum([gateway.service.child.pid!])],
          ["relays", () => sum(net.relays.map((r) => r.service.child.pid!))],
          ["fleet", () => sum(fleetPids)],
          ...(redisPid ? [["redis", () => sum([redisPid])] as [string, () => Use]] : []),
        ] as [string, () => Use][])),
    ["customer+target", () => sum([process.pid])],
  ];
  const start = procs.map(([, read]) => read());
  const used = () =>
    procs.map(([name, read], i) => {
      const now = read();
      return { name, cpu: now.cpu - start[i]!.cpu, writes: now.writes - start[i]!.writes };
    });
  return {
    /** CPU seconds per GB moved, in total and by process, and each process's writes per MB moved. */
    perGB(bytes: number): string {
      const u = used();
      const per = (c: number) => ((c * 1e9) / bytes).toFixed(2);
      const writes = (w: number) => ((w * 1e6) / bytes).toFixed(1);
      return `${per(u.reduce((s, p) => s + p.cpu, 0))} s: ${u.map((p) => `${p.name} ${per(p.cpu)}`).join(", ")}; write system calls per MB: ${u.map((p) => `${p.name} ${writes(p.writes)}`).join(", ")}`;
    },
    /** CPU milliseconds and write system calls per stream opened, in total and by process. */
    perStream(streams: number): string {
      const u = used();
      const n = Math.max(1, streams);
      const per = (p: { cpu: number; writes: number }) =>
        `${((p.cpu * 1e3) / n).toFixed(2)} ms / ${(p.writes / n).toFixed(1)} writes`;
      const total = u.reduce((s, p) => ({ cpu: s.cpu + p.cpu, writes: s.writes + p.writes }), {
        cpu: 0,
        writes: 0,
      });
      return `${per(total)}: ${u.map((p) => `${p.name} ${per(p)}`).join(", ")}`;
    },
  };
}

/**
 * One tunnel pinned to a device that is for sale (the prober may not have reached them all), and
 * 64 tunnels spread over the pool as 64 customers would, against the anchors given and rathole
 * (websocket and tcp transports) started here; with `lone`, first one tunnel through that device
 * alone in its SDK process (the headline). Returns the rows and the rathole anchors to stop.
 */
async function throughputFigure(
  endpoints: { id: string }[],
  anchors: [string, Route | undefined][],
  lone?: { id: string; pid: number },
): Promise<{ rows: Row[]; rathole: Record<string, Anchor> }> {
  const out: Row[] = [];
  const routes = customerRoutes();
  const pinTo = (id: string): Route => ({
    ...routes.viaGateway,
    auth: `${net.customer.user}-pin-device-${id}:${net.customer.secret}`,
  });
  let good = endpoints[0]!;
  for (const e of endpoints)
    if ((await net.redis.raw.sismember(keys.poolListed(), e.id)) === 1) {
      good = e;
      break;
    }
  const pinned = pinTo(good.id);
  // flow-v1 windows grow only within the relay's budget over all open tunnels: what is left of it.
  log(
    `relay before figure 3: ${await scrapeMetric(relay.metrics, "relay_tunnels")} tunnels open, ${((await scrapeMetric(relay.metrics, "relay_grown_window_bytes")) / 1048576).toFixed(1)} MiB of grown window credit held`,
  );
  const bytes1 = cfg.tunnelMiB * 1024 * 1024;
  const bytes64 = Math.max(1, Math.floor(bytes1 / 16));
  const ratholeWhy = await ratholeBuilt;
  const rathole = {
    websocket: ratholeWhy
      ? ({ ok: false, why: ratholeWhy } as Anchor)
      : await startRatholeAnchor("websocket", net.httpTarget.port),
    tcp: ratholeWhy
      ? ({ ok: false, why: ratholeWhy } as Anchor)
      : await startRatholeAnchor("tcp", net.httpTarget.port),
  };
  const tputRoutes: [string, Route | undefined][] = [
    ["peerproxy", pinned],
    ...anchors,
    ["rathole websocket", rathole.websocket.ok ? rathole.websocket.route : undefined],
    ["rathole tcp", rathole.tcp.ok ? rathole.tcp.route : undefined],
  ];
  /** The rathole anchor a route name ("rathole websocket", "rathole tcp") stands for, if any. */
  const ratholeNamed = (name: string) => Object.entries(rathole).find(([t]) => name === `rathole ${t}`)?.[1];
  const tput: Record<string, { one: number; many: number }> = {};
  const oneTunnelCpu: Record<string, string> = {};
  /** The same for the 64 tunnels at once (peerproxy's with redis-server, which leases their bytes). */
  const manyTunnelsCpu: Record<string, string> = {};
  /** Each name's one-tunnel runs: its rate and CPU row are the median run's. */
  const oneRuns: Record<string, { rate: number; cpu: string }[]> = {};
  // A tunnel's worth of the path before each measured one: the relay, gateway and SDK run their
  // data path optimized (JIT) when measured, as they do in service; the anchors are native code.
  const warmUp = (route: Route) =>
    throughput({ route, target: routes.target, tunnels: 1, bytesEach: Math.ceil(bytes1 / 4) });
  /** One tunnel of `bytes1` on a quiet machine; for peerproxy (`fleetPids` given) on a warm path. */
  const measureOne = async (name: string, route: Route, fleetPids?: number[], profile?: string) => {
    const own = ratholeNamed(name);
    const ours = fleetPids !== undefined;
    await quiet(`one tunnel, ${name}`);
    if (ours) await warmUp(route);
    const cpu = ours
      ? cpuMeter(undefined, undefined, fleetPids.length ? fleetPids : undefined)
      : cpuMeter(own?.ok ? (own.pids ?? []) : []);
    const gc = ours ? await gcClock() : undefined;
    const grown = ours ? await windowsGrown() : undefined;
    const steal = stealMeter();
    const one = await profiled(profile, () =>
      throughput({ route, target: routes.target, tunnels: 1, bytesEach: bytes1 }),
    );
    const row = cpu.perGB(bytes1) + (gc && grown ? `; ${await gc.perGB(bytes1)}; ${await grown()}` : "");
    log(
      `${name}: 1 tunnel ${fmtRate(one.bytesPerSecond)}${one.firstError ? ` (${one.firstError})` : ""}; CPU per GB ${row}; steal ${(steal.stolen() * 100).toFixed(1)} %`,
    );
    oneRuns[name] = [...(oneRuns[name] ?? []), { rate: one.bytesPerSecond, cpu: row }];
  };
  const median = (name: string) => {
    const runs = [...(oneRuns[name] ?? [])].sort((a, b) => a.rate - b.rate);
    return runs[(runs.length - 1) >> 1];
  };
  // The headline pairs, lone device then anchor: a ratio per pair, the median pair's reported.
  const pairRatios: number[] = [];
  if (lone) {
    // The device alone in its process, as a real one runs the SDK: no simulator heap of thousands
    // of sockets whose every collection (set off by the buffers a fast tunnel turns over) costs more.
    for (let i = 0; i < cfg.tunnelPairs; i++) {
      await measureOne(
        "peerproxy, a device alone",
        pinTo(lone.id),
        [lone.pid],
        i ? undefined : "one-tunnel-lone",
      );
      if (!rathole.websocket.ok) continue;
      await measureOne("rathole websocket", rathole.websocket.route);
      const runs = [oneRuns["peerproxy, a device alone"]!, oneRuns["rathole websocket"]!];
      pairRatios.push(runs[0]!.at(-1)!.rate / runs[1]!.at(-1)!.rate);
    }
    const m = median("peerproxy, a device alone")!;
    oneTunnelCpu.lone = m.cpu;
    tput.lone = { one: m.rate, many: Number.NaN };
  }
  for (const [name, route] of tputRoutes) {
    if (!route) continue;
    const manyRoute = name === "peerproxy" ? routes.viaGateway : route;
    if (!oneRuns[name])
      await measureOne(
        name,
        route,
        name === "peerproxy" ? [] : undefined,
        name === "peerproxy" ? "one-tunnel" : undefined,
      );
    const m = median(name)!;
    oneTunnelCpu[name] = m.cpu;
    const own = ratholeNamed(name);
    const manyCpu =
      name === "peerproxy"
        ? cpuMeter(undefined, await redisPid())
        : own?.ok
          ? cpuMeter(own.pids ?? [])
          : undefined;
    const many = await throughput({
      route: manyRoute,
      target: routes.target,
      tunnels: 64,
      bytesEach: bytes64,
    });
    if (manyCpu) {
      manyTunnelsCpu[name] = manyCpu.perGB(64 * bytes64);
      log(`${name}: 64 tunnels, CPU per GB ${manyTunnelsCpu[name]}`);
    }
    tput[name] = { one: m.rate, many: many.bytesPerSecond };
    log(
      `${name}: 1 tunnel ${fmtRate(m.rate)}${oneRuns[name]!.length > 1 ? ` (median of ${oneRuns[name]!.length})` : ""}, 64 tunnels ${fmtRate(many.bytesPerSecond)}${many.firstError ? ` (${many.firstError})` : ""}`,
    );
  }
  const tAnchor = tput["rathole websocket"] ? "rathole websocket" : "direct loopback";
  const perProc = Math.ceil(Math.max(cfg.stage1Devices, cfg.devices - cfg.stage1Devices) / cfg.fleetProcs);
  const packed = lone
    ? `, to a device among the simulator's (up to ${perProc.toLocaleString("en")} per process)`
    : "";
  for (const [key, label] of [
    ["lone", ", to a device alone in its process (as deployed)"],
    ["peerproxy", packed],
  ] as const) {
    if (!oneTunnelCpu[key]) continue;
    out.push({
      figure: `one tunnel${label}: CPU seconds per GB moved, by process (where the time goes); write system calls per MB`,
      value: oneTunnelCpu[key],
      anchor: oneTunnelCpu[tAnchor] ? `${tAnchor} ${oneTunnelCpu[tAnchor]}` : "-",
      ratio: "-",
      goal: "reported",
    });
    const paired = key === "lone" && pairRatios.length > 1;
    const rates = (name: string) => {
      const runs = oneRuns[name] ?? [];
      return runs.length > 1
        ? ` (median of ${runs.map((r) => fmtRate(r.rate).replace(" MB/s", "")).join(", ")})`
        : "";
    };
    const sorted = [...pairRatios].sort((a, b) => a - b);
    out.push({
      figure: `one tunnel${label}, ${cfg.tunnelMiB} MiB${paired ? `, ${pairRatios.length} pairs run in turn with the anchor (ratio: the median pair's)` : ""}`,
      value: fmtRate(tput[key]!.one) + (key === "lone" ? rates("peerproxy, a device alone") : ""),
      anchor: `${tAnchor} ${fmtRate(tput[tAnchor]!.one)}${rates(tAnchor)}`,
      ratio: paired
        ? `${sorted[(sorted.length - 1) >> 1]!.toFixed(2)}x (pairs ${pairRatios.map((r) => r.toFixed(2)).join(", ")})`
        : ratio(tput[key]!.one, tput[tAnchor]!.one),
      goal: key === "lone" || !lone ? ">= 0.5x rathole websocket" : "reported",
    });
  }
  if (manyTunnelsCpu.peerproxy)
    out.push({
      figure:
        "64 tunnels at once over the pool: CPU seconds per GB moved, by process; write system calls per MB",
      value: manyTunnelsCpu.peerproxy,
      anchor: manyTunnelsCpu[tAnchor] ? `${tAnchor} ${manyTunnelsCpu[tAnchor]}` : "-",
      ratio: "-",
      goal: "reported",
    });
  out.push({
    figure: `64 tunnels, ${(bytes64 / 1048576).toFixed(1)} MiB each (aggregate)`,
    value: fmtRate(tput.peerproxy!.many),
    anchor: `${tAnchor} ${fmtRate(tput[tAnchor]!.many)}`,
    ratio: ratio(tput.peerproxy!.many, tput[tAnchor]!.many),
    goal: "reported",
  });
  for (const name of ["direct loopback", "tinyproxy", "dante", "rathole tcp"])
    if (tput[name])
      out.push({
        figure: `anchor: ${name}, one tunnel / 64 tunnels`,
        value: "-",
        anchor: `${fmtRate(tput[name]!.one)} / ${fmtRate(tput[name]!.many)}`,
        ratio: `peerproxy ${ratio((tput.lone ?? tput.peerproxy)!.one, tput[name]!.one)} / ${ratio(tput.peerproxy!.many, tput[name]!.many)}`,
        goal: "anchor",
      });
  for (const [name, a] of Object.entries(rathole))
    if (!a.ok)
      out.push({ figure: `rathole ${name} anchor`, value: "-", anchor: "missing", ratio: "-", goal: a.why });
  return { rows: out, rathole };
}
/** From now: how many times the first relay doubled a flow-v1 window (a fast tunnel's window grows). */
async function windowsGrown(): Promise<() => Promise<string>> {
  const read = async () => (await scrapeMetric(relay.metrics, "relay_windows_grown_total")) || 0;
  const start = await read();
  return async () => `relay windows doubled ${(await read()) - start}`;
}

/** The first gateway's and relay's time in garbage collection from now (nodejs_gc_duration_seconds). */
async function gcClock() {
  const urls = [gateway.metrics, relay.metrics];
  const pids = [gateway.service.child.pid!, relay.service.child.pid!];
  // The histogram has no series before its first observation (and observes from its first scrape).
  const read = () =>
    Promise.all(
      urls.map(async (url, i) => ({
        pause: (await scrapeMetric(url, "nodejs_gc_duration_seconds_sum")) || 0,
        majors: (await scrapeMetric(url, "nodejs_gc_duration_seconds_count", { kind: "major" })) || 0,
        helpers: threadCpu(pids[i]!).others,
      })),
    );
  const start = await read();
  const since = async () =>
    (await read()).map((v, i) => ({
      pause: v.pause - start[i]!.pause,
      majors: v.majors - start[i]!.majors,
      helpers: v.helpers - start[i]!.helpers,
    }));
  return {
    /**
     * their GC per GB moved: pauses on the main thread and CPU on the other threads (mostly V8's
     * concurrent marking and sweeping), in seconds, and how many major GCs ran
     */
    async perGB(bytes: number): Promise<string> {
      const [gw, rl] = (await since()).map((v) => ({
        pause: ((v.pause * 1e9) / bytes).toFixed(2),
        helpers: ((v.helpers * 1e9) / bytes).toFixed(2),
        majors: v.majors,
      }));
      return `in GC: gateway ${gw!.pause}, relay ${rl!.pause}; off the main thread: gateway ${gw!.helpers}, relay ${rl!.helpers}; major GCs: gateway ${gw!.majors}, relay ${rl!.majors}`;
    },
    /** their GC time in all since the start */
    async total(): Promise<string> {
      const [gw, rl] = (await since()).map((v) => fmtMs(v.pause * 1000));
      return `in GC: gateway ${gw}, relay ${rl}`;
    },
  };
}

/**
 * What each process used since `start` (allProcessCpu) over `seconds`: everything together and
 * the five busiest, in cores and % of a core.
 */
function cpuSince(start: ReturnType<typeof allProcessCpu>, seconds: number) {
  const used = [...allProcessCpu()]
    .map(([pid, p]) => ({
      pid,
      name: p.name,
      used: p.cpuSeconds - (start.get(pid)?.cpuSeconds ?? p.cpuSeconds),
    }))
    .sort((a, b) => b.used - a.used);
  return {
    total: used.reduce((a, p) => a + p.used, 0) / seconds,
    busiest: used
      .slice(0, 5)
      .map((p) => `${p.name} ${p.pid} ${((p.used * 100) / seconds).toFixed(0)} %`)
      .join(", "),
  };
}

/**
 * Waits (up to a minute; the smoke 2 s) until the first relay and gateway each spend under 15 % of
 * a core over a second and everything on the machine together under 40 %. What the last figure
 * left them doing (thousands of tunnels closing) is not charged to the next measurement, and
 * neither is what runs here only because one machine plays the whole network: the API's scheduled
 * jobs (the bench fires them while it waits for a listing), the prober's rounds. Logs how long that
 * took and the machine's busiest processes in the last second.
 */
async function quiet(label: string) {
  const pids = [relayPid, gateway.service.child.pid!];
  const t0 = Date.now();
  const readings: string[] = [];
  let others = "";
  for (;;) {
    const c0 = pids.map((pid) => procStats(pid).cpuSeconds);
    const all0 = allProcessCpu();
    await settle(1000);
    const used = pids.map((pid, i) => procStats(pid).cpuSeconds - c0[i]!);
    const { total, busiest } = cpuSince(all0, 1);
    readings.push(
      `${used.map((u) => `${(u * 100).toFixed(0)} %`).join(" / ")} / ${(total * 100).toFixed(0)} %`,
    );
    others = busiest;
    // The smoke runs beside other tests: it waits a moment at most.
    if ((used.every((u) => u < 0.15) && total < 0.4) || Date.now() - t0 >= (smoke ? 2_000 : 60_000)) break;
  }
  log(
    `quiet before ${label} after ${((Date.now() - t0) / 1000).toFixed(0)} s (CPU per second, relay / gateway / machine: ${readings.join(", ")}); busiest in the last second: ${others}`,
  );
}

// One device alone in its own SDK process, beside the simulator's, for figure 3's headline.
const loneIds = await startFleetProcs("lone", 1, 1);
const loneListed = await net.waitListed(
  loneIds.map((d) => d.id),
  120_000,
);
const loneFleet = fleets[fleets.length - 1]!;
const { rows: tputRows, rathole } = await throughputFigure(
  endpoints,
  [
    ["direct loopback", direct],
    ["tinyproxy", anchors.tinyproxy!.ok ? anchors.tinyproxy!.route : undefined],
    ["dante", anchors.dante!.ok ? anchors.dante!.route : undefined],
  ],
  loneListed === 1 ? { id: loneIds[0]!.id, pid: loneFleet.child.pid! } : undefined,
);
rows.push(...tputRows);

// --- The quality loop at scale: misbehaving exits must not be sold -----------------------------
// Started after the timed figures so their exits never serve them. Each behaviour's shim
// (bench/fleet/shims.ts) sits between the device and every target, probes included.
const badCount = Math.round(cfg.devices * cfg.misbehaving);
const fleetsBeforeQuality = fleets.length;
if (badCount > 0) {
  const share = 1 / 4;
  const bad = await startFleetProcs("q", badCount, 1, {
    slow: share,
    stall: share,
    tlsDrop: share,
    flapping: share,
  });
  const steady = bad.filter((d) => !d.flapping);
  await net.waitListed(
    steady.map((d) => d.id),
    smoke ? 20_000 : 60_000,
  );
  const byBehaviour = new Map<string, { n: number; listed: number; failing: number }>();
  for (const d of bad) {
    const k = d.flapping ? "flapping" : d.behaviour;
    const e = byBehaviour.get(k) ?? { n: 0, listed: 0, failing: 0 };
    e.n++;
    if ((await net.redis.raw.sismember(keys.poolListed(), d.id)) === 1) e.listed++;
    if (Number((await net.redis.hgetall(keys.probe(d.id))).failStreak ?? 0) > 0) e.failing++;
    byBehaviour.set(k, e);
  }
  const summary = [...byBehaviour].map(
    ([k, v]) => `${k} ${v.listed}/${v.n} listed, ${v.failing} failing probes`,
  );
  log(`quality loop: ${summary.join("; ")}`);
  rows.push({
    figure: `misbehaving exits after ${smoke ? 20 : 60} s (${badCount}: slow, stalling, TLS-dropping, flapping)`,
    value: summary.join("; "),
    anchor: "-",
    ratio: "-",
    goal: "stall/TLS-drop 0; slow only as tier slow",
  });
}

// The misbehaving fleet is measured: stopped, so its flapping churns no state under the soak.
for (const f of fleets.splice(fleetsBeforeQuality)) await f.stop();

// Fault d moves the fault fleet's 5,000 sockets onto the first relay. Beside figure 1's 16,000 they
// would pass the open-file limit (20,000 here; an unprivileged process cannot raise it), and the
// sockets past it are accepted and closed at once (libuv's EMFILE handling): two full runs moved
// the same 3,934 sockets, a figure of the limit, not of the failover. So when they would not fit,
// figure 1's second stage stops here, before the soak, and its devices leave the pool (presence
// lapses, the cron delists them) before anything routes again.
const faultSocketsTotal = cfg.faultDevices * cfg.faultSockets;
if (faultsToRun.includes("d") && (await relaySockets()) + faultSocketsTotal + 1_000 > fdLimit) {
  const stage2Fleets = fleets.filter((f) => f.name.startsWith("fleet-s2-"));
  for (const f of stage2Fleets) await f.stop();
  fleets.splice(0, fleets.length, ...fleets.filter((f) => !stage2Fleets.includes(f)));
  const gone = stage2.map((d) => d.id);
  const stillListed = () => net.countListed(gone);
  const stoppedAt = Date.now();
  while ((await stillListed()) > 0 && Date.now() - stoppedAt < 180_000) {
    await net.cron();
    await settle(2_000);
  }
  log(
    `fault d needs room for ${faultSocketsTotal} more sockets under the open-file limit ${fdLimit}: stopped figure 1's second stage (${gone.length} devices); ${await stillListed()} still listed after ${((Date.now() - stoppedAt) / 1000).toFixed(0)} s; ${await relaySockets()} sockets on ${relay.id}`,
  );
}

// --- Figure 4: soak ----------------------------------------------------------------------------
const soakStarted = Date.now();
rows.push(...(await soakFigure(net, soak, log, fleets)).rows);
log(`figure 4 (soak) took ${((Date.now() - soakStarted) / 1000).toFixed(1)} s`);

// --- Figure 5: faults (last: they kill a relay and a gateway and restart Redis) ----------------
const faultsStarted = Date.now();
rows.push(...(await faultFigures(earlyFaultFleet ?? startFaultFleet())));
log(`figure 5 (faults) took ${((Date.now() - faultsStarted) / 1000).toFixed(1)} s`);

// --- Report ------------------------------------------------------------------------------------
const table = markdownTable(rows);
const when = new Date().toISOString();
const md = [
  `# peerproxy bench${smoke ? " (smoke)" : ""}`,
  "",
  `${when}; ${cfg.devices.toLocaleString("en")} simulated devices x ${cfg.sockets} sockets in ${cfg.fleetProcs} process(es), two relays and two gateways (figures 1-3 measure the first of each), ${cfg.concurrency} concurrent customers; open-file limit ${fdLimit}. Every anchor ran on this machine in this run; ratios are what carry over. The hypervisor took ${(runSteal.stolen() * 100).toFixed(1)} % of the machine's CPU time during the run (steal).`,
  "",
  table,
  "",
  "![latency percentiles](latency.svg)",
  "",
].join("\n");
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, "latest.md"), md);
// One colour per route: solid at the full concurrency, dashed at the middle one, dotted paced.
const series: Series[] = Object.entries(latency).flatMap(([name, r], i) =>
  (
    [
      ["cN", `c=${cfg.concurrency}`, undefined],
      ["cMid", `c=${cfg.midConcurrency}`, "dashed"],
      ["paced", `${cfg.concurrency} paced`, "dotted"],
    ] as const
  ).map(([key, label, line]) => ({
    name: `${name.replace(/ \(.*\)$/, "")} ${label}`,
    color: i,
    line,
    points: [50, 90, 99, 99.9].map((p) => ({ p, ms: percentile(r[key].setup, p) })),
  })),
);
writeFileSync(
  join(outDir, "latency.svg"),
  latencySvg(
    `CONNECT setup latency: ${cfg.midConcurrency} and ${cfg.concurrency} customers back to back, ${cfg.concurrency} paced (${cfg.thinkSeconds} s)`,
    series,
  ),
);
console.log(`\n${table}\n`);
log(`wrote ${join(outDir, "latest.md")} and latency.svg`);

for (const a of [...Object.values(anchors), ...Object.values(rathole)]) if (a.ok) await a.stop();
for (const f of fleets) await f.stop();
await net.stop();
process.exit(0);
