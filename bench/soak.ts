// Figure 4, the soak: many tunnels through gateway -> relay -> peer -> target, each carrying random
// payloads both ways that the far end checksums, with bounded concurrency. Reports bytes lost,
// corrupted or reordered (must be 0), the gateway's metered bytes for the soak's own credential
// against the bytes moved (the documented overhead is 0: docs/protocol.md "Metering"), and what
// the relays, the gateways and Redis hold afterwards against before (file descriptors, sockets,
// RSS after a full GC, keys). Also the hash target and the process probes the fault figures use.
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readlinkSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { WebSocket } from "ws";
import type { Service } from "../dev/proc.ts";
import { keys } from "../shared/keys.ts";
import { openStream, procStats, type Route, type Target } from "./measure.ts";
import type { BenchNetwork } from "./network.ts";
import type { Row } from "./report.ts";

// --- The hash target ----------------------------------------------------------------------------
// A tunnel's conversation: the client sends an 8-byte header (up bytes, down bytes: u32 BE each)
// and `up` random bytes; the target answers at once, while still reading, with `down` random
// bytes, then SHA-256 of what it sent and SHA-256 of what it received, and ends. Both directions
// are thus checked end to end by the client: a lost, duplicated, reordered or altered byte either
// way changes a digest or the length.
const HEADER_BYTES = 8;
const TRAILER_BYTES = 64;

export interface HashTarget extends Target {
  /** bytes the target received (headers included) and sent (trailers included), all connections */
  received: number;
  sent: number;
  open: number;
  stop(): Promise<void>;
}

export async function startHashTarget(): Promise<HashTarget> {
  const conns = new Set<Socket>();
  const server = createServer((sock) => {
    conns.add(sock);
    t.open++;
    sock.on("close", () => {
      conns.delete(sock);
      t.open--;
    });
    sock.on("error", () => {});
    let head: Buffer = Buffer.alloc(0);
    let upLeft = -1;
    const upHash = createHash("sha256");
    let downHash: Buffer = Buffer.alloc(0);
    sock.on("data", (chunk: Buffer) => {
      t.received += chunk.length;
      if (upLeft === Number.POSITIVE_INFINITY) return; // answered: anything further is only counted
      if (upLeft < 0) {
        head = Buffer.concat([head, chunk]);
        if (head.length < HEADER_BYTES) return;
        upLeft = head.readUInt32BE(0);
        const down = randomBytes(head.readUInt32BE(4));
        chunk = head.subarray(HEADER_BYTES);
        sock.write(down);
        t.sent += down.length;
        downHash = createHash("sha256").update(down).digest();
      }
      const take = chunk.subarray(0, upLeft);
      upHash.update(take);
      upLeft -= take.length;
      if (upLeft === 0) {
        upLeft = Number.POSITIVE_INFINITY;
        sock.end(Buffer.concat([downHash, upHash.digest()]));
        t.sent += TRAILER_BYTES;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const t: HashTarget = {
    host: "127.0.0.1",
    port: (server.address() as AddressInfo).port,
    received: 0,
    sent: 0,
    open: 0,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of conns) s.destroy();
        server.close(() => resolve());
      }),
  };
  return t;
}

export type TunnelOutcome =
  /** every byte arrived both ways, digests match */
  | { kind: "ok"; up: number; down: number }
  /** the tunnel never opened (CONNECT refused, timeout): no payload moved */
  | { kind: "setup_failed"; error: string }
  /** opened, but bytes went missing (short read) or arrived altered or out of order */
  | { kind: "short" | "corrupt"; up: number; down: number; missing: number; error?: string };

/** One tunnel of the hash conversation; `up`/`down` in the outcome are the bytes moved each way. */
export async function hashTunnel(
  route: Route,
  target: Target,
  upBytes: number,
  downBytes: number,
  timeoutMs = 30_000,
): Promise<TunnelOutcome> {
  let sock: Socket;
  try {
    sock = await openStream(route, target, timeoutMs);
  } catch (err) {
    return { kind: "setup_failed", error: (err as Error).message };
  }
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(upBytes, 0);
  header.writeUInt32BE(downBytes, 4);
  const payload = randomBytes(upBytes);
  const sentHash = createHash("sha256").update(payload).digest();
  const expected = downBytes + TRAILER_BYTES;
  const up = HEADER_BYTES + upBytes;
  return new Promise<TunnelOutcome>((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    let error: string | undefined;
    const timer = setTimeout(() => sock.destroy(new Error(`no end after ${timeoutMs} ms`)), timeoutMs);
    sock.on("data", (d: Buffer) => {
      chunks.push(d);
      got += d.length;
    });
    sock.on("error", (err) => {
      error ??= err.message;
    });
    sock.on("close", () => {
      clearTimeout(timer);
      if (got < expected) {
        resolve({ kind: "short", up, down: got, missing: expected - got, error });
        return;
      }
      const all = Buffer.concat(chunks);
      const down = all.subarray(0, downBytes);
      const ok =
        got === expected &&
        createHash("sha256")
          .update(down)
          .digest()
          .equals(all.subarray(downBytes, downBytes + 32)) &&
        all.subarray(downBytes + 32).equals(sentHash);
      resolve(ok ? { kind: "ok", up, down: got } : { kind: "corrupt", up, down: got, missing: 0, error });
    });
    // No half-close: the target ends the conversation once it has every byte.
    sock.write(header);
    sock.write(payload);
  });
}

/** Runs `tunnels` hash tunnels, `concurrency` at a time, sizes uniform in [0, maxBytes] each way. */
export async function hashTunnels(opts: {
  route: Route | ((i: number) => Route);
  target: Target;
  tunnels: number;
  concurrency: number;
  maxBytes: number;
}) {
  const out = { ok: 0, setupFailed: 0, short: 0, corrupt: 0, missing: 0, up: 0, down: 0, firstError: "" };
  let next = 0;
  const worker = async () => {
    while (next < opts.tunnels) {
      const i = next++;
      const route = typeof opts.route === "function" ? opts.route(i) : opts.route;
      const size = () => Math.floor(Math.random() * (opts.maxBytes + 1));
      const r = await hashTunnel(route, opts.target, size(), size());
      if (r.kind === "setup_failed") {
        out.setupFailed++;
        out.firstError ||= r.error;
        continue;
      }
      out.up += r.up;
      out.down += r.down;
      if (r.kind === "ok") out.ok++;
      else {
        if (r.kind === "short") out.short++;
        else out.corrupt++;
        out.missing += r.missing;
        out.firstError ||= r.error ?? r.kind;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  return out;
}

// --- Process and store probes --------------------------------------------------------------------

/**
 * Sums a Prometheus metric over its labels, or over the series whose labels include `where`
 * (a histogram's `{ le: "0.01" }` bucket); NaN when absent or the endpoint is down.
 */
export async function scrapeMetric(
  url: string,
  name: string,
  where: Record<string, string> = {},
): Promise<number> {
  try {
    const text = await (await fetch(url)).text();
    const wanted = Object.entries(where).map(([k, v]) => `${k}="${v}"`);
    const values = [...text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})?\\s+(\\S+)`, "gm"))]
      .filter((m) => wanted.every((w) => (m[1] ?? "").split(",").includes(w)))
      .map((m) => Number(m[2]));
    return values.length ? values.reduce((a, b) => a + b, 0) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

const inspectors = new WeakMap<Service, string>();

/**
 * The inspector's URL, read from what the process printed at start and remembered: a busy process
 * logs enough (a line per tunnel) for the first lines to leave the kept output. Call it early.
 */
export function inspectorUrl(service: Service): string | undefined {
  const url = inspectors.get(service) ?? /Debugger listening on (ws:\/\/\S+)/.exec(service.output())?.[1];
  if (url) inspectors.set(service, url);
  return url;
}

/** A Chrome DevTools Protocol session with a Node process started with `--inspect`. */
async function devtools(url: string) {
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  let next = 0;
  const replies = new Map<number, (result: Record<string, unknown>) => void>();
  ws.on("message", (data) => {
    const msg = JSON.parse(String(data)) as { id?: number; result?: Record<string, unknown> };
    if (msg.id !== undefined) replies.get(msg.id)?.(msg.result ?? {});
  });
  return {
    call(method: string, params: Record<string, unknown> = {}) {
      const id = ++next;
      return new Promise<Record<string, unknown>>((resolve) => {
        replies.set(id, resolve);
        ws.send(JSON.stringify({ id, method, params }));
      });
    },
    close: () => ws.close(),
  };
}

/**
 * A full GC in a Node process started with `--inspect` (HeapProfiler.collectGarbage over the Chrome
 * DevTools Protocol); resolves with the V8 heap in use after it (KiB), NaN without an inspector.
 */
export async function fullGc(service: Service): Promise<number> {
  const url = inspectorUrl(service);
  if (!url) return Number.NaN;
  const session = await devtools(url);
  await session.call("HeapProfiler.collectGarbage");
  const heap = await session.call("Runtime.getHeapUsage");
  session.close();
  await new Promise((r) => setTimeout(r, 500));
  return (Number(heap.usedSize) || Number.NaN) / 1024;
}

/**
 * CPU profiles of the named processes (those with an inspector) over one stretch of a run: starts
 * their profilers now; `stop()` writes `<dir>/<name>.cpuprofile` for each (open them in Chrome's
 * DevTools). BENCH_PROFILE_DIR turns this on around figures 2 and 3, so a profile holds only the
 * figure and none of the start-up.
 */
export async function profileWindow(services: [string, Service][], dir: string) {
  mkdirSync(dir, { recursive: true });
  const sessions: [string, Awaited<ReturnType<typeof devtools>>][] = [];
  for (const [name, service] of services) {
    const url = inspectorUrl(service);
    if (!url) continue;
    const session = await devtools(url);
    await session.call("Profiler.enable");
    await session.call("Profiler.setSamplingInterval", { interval: 200 });
    await session.call("Profiler.start");
    sessions.push([name, session]);
  }
  return {
    async stop(): Promise<string[]> {
      const files: string[] = [];
      for (const [name, session] of sessions) {
        const { profile } = await session.call("Profiler.stop");
        const file = join(dir, `${name}.cpuprofile`);
        writeFileSync(file, JSON.stringify(profile));
        files.push(file);
        session.close();
      }
      return files;
    },
  };
}

/**
 * On-CPU samples of the named processes over one stretch, by `perf record` (each process must run
 * under `--perf-basic-prof-only-functions` for its JavaScript to have names): `stop()` writes
 * `<dir>/<name>.data` and `<dir>/<name>.txt`, the symbols by self time, and returns the .txt files.
 * Unlike the inspector's profiler it does not slow the process and counts only time on a core.
 */
export async function perfWindow(procs: [string, number][], dir: string) {
  mkdirSync(dir, { recursive: true });
  const running = procs.map(([name, pid]) => {
    const data = join(dir, `${name}.data`);
    const child = spawn("perf", ["record", "-q", "-F", "1999", "-p", String(pid), "-o", data], {
      stdio: "ignore",
    });
    return { name, data, child, exited: new Promise((r) => child.once("exit", r)) };
  });
  // perf attaches within a few ms; the stretch must not start before it samples
  await new Promise((r) => setTimeout(r, 300));
  return {
    async stop(): Promise<string[]> {
      const files: string[] = [];
      for (const r of running) {
        r.child.kill("SIGINT");
        await r.exited;
        const txt = join(dir, `${r.name}.txt`);
        const report = await new Promise<string>((resolve) =>
          execFile(
            "perf",
            ["report", "-i", r.data, "--stdio", "--no-children", "--sort", "sym", "--percent-limit", "0.3"],
            { maxBuffer: 64 * 1024 * 1024 },
            (err, stdout, stderr) => resolve(err ? `perf report failed: ${stderr || err.message}` : stdout),
          ),
        );
        writeFileSync(txt, report);
        files.push(txt);
      }
      return files;
    },
  };
}

export interface Footprint {
  fds: number;
  sockets: number;
  rssKiB: number;
  /** V8 heap in use after a full GC (NaN without an inspector) */
  heapKiB: number;
}

/** Open file descriptors, the sockets among them, RSS and V8 heap of a process, after a full GC. */
export async function footprint(service: Service): Promise<Footprint> {
  const heapKiB = await fullGc(service).catch(() => Number.NaN);
  const pid = service.child.pid!;
  let fds = 0;
  let sockets = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    fds++;
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("socket:")) sockets++;
    } catch {} // closed between the listing and the look
  }
  return { fds, sockets, rssKiB: procStats(pid).rssKiB, heapKiB };
}

/** The footprints of several processes added up (the fleet's SDK processes). */
async function footprintOf(services: Service[]): Promise<Footprint> {
  const all = await Promise.all(services.map(footprint));
  return all.reduce(
    (t, f) => ({
      fds: t.fds + f.fds,
      sockets: t.sockets + f.sockets,
      rssKiB: t.rssKiB + f.rssKiB,
      heapKiB: t.heapKiB + f.heapKiB,
    }),
    { fds: 0, sockets: 0, rssKiB: 0, heapKiB: 0 },
  );
}

/** Every key in Redis with whether it expires (SCAN; the bench's Redis is small enough). */
export async function redisKeys(net: BenchNetwork): Promise<Map<string, boolean>> {
  const out = new Map<string, boolean>();
  let cursor = "0";
  do {
    const [next, batch] = await net.redis.raw.scan(cursor, "COUNT", 2000);
    cursor = next;
    if (!batch.length) continue;
    const pipe = net.redis.raw.pipeline();
    for (const k of batch) pipe.pttl(k);
    const ttls = (await pipe.exec()) ?? [];
    batch.forEach((k, i) => {
      out.set(k, Number(ttls[i]?.[1]) > 0);
    });
  } while (cursor !== "0");
  return out;
}

/** Key family of a key name: `credlease:{id}` -> `credlease:{}`, `bytes:dev:{id}` -> `bytes:dev:{}`. */
const family = (k: string) => k.replace(/\{[^}]*\}/g, "{}").replace(/:[a-z]+_[A-Za-z0-9]+/g, ":<id>");

/** Key families a device gains once, on the first byte it serves: not per tunnel, so no leak. */
const ONCE_PER_DEVICE = new Set(["bytes:dev:{}"]);

/** Keys present after but not before, by family, split into expiring and persistent. */
export function keyGrowth(before: Map<string, boolean>, after: Map<string, boolean>) {
  const added = new Map<string, { n: number; ttl: boolean }>();
  for (const [k, ttl] of after) {
    if (before.has(k)) continue;
    const f = `${family(k)}${ttl ? " (TTL)" : ONCE_PER_DEVICE.has(family(k)) ? " (once per device)" : ""}`;
    added.set(f, { n: (added.get(f)?.n ?? 0) + 1, ttl });
  }
  let gone = 0;
  for (const k of before.keys()) if (!after.has(k)) gone++;
  const persistent = [...added.values()].filter((a) => !a.ttl).reduce((s, a) => s + a.n, 0);
  const summary = [...added].map(([f, a]) => `${f} +${a.n}`).join(", ");
  return { net: after.size - before.size, gone, persistent, summary };
}

// --- Figure 4 ------------------------------------------------------------------------------------

export interface SoakSettings {
  tunnels: number;
  concurrency: number;
  /** the largest payload each way; sizes are uniform in [0, maxBytes] */
  maxBytes: number;
  /** wait after the soak before the "after" readings */
  settleMs: number;
}

const fmtBytes = (n: number) => `${n.toLocaleString("en")} B`;
const mib = (kibDelta: number) =>
  Number.isFinite(kibDelta) ? `${kibDelta >= 0 ? "+" : ""}${(kibDelta / 1024).toFixed(1)} MiB` : "n/a";

/**
 * Figure 4; `log` narrates. Customer traffic alternates over every gateway of `net`. `peers`: the
 * fleet's SDK processes (the devices the tunnels go through), read like the relays and gateways
 * and reported as one row: the SDK must not grow either.
 */
export async function soakFigure(
  net: BenchNetwork,
  s: SoakSettings,
  log: (m: string) => void,
  peers: Service[] = [],
) {
  const target = await startHashTarget();
  // Its own credential: the metered bytes of this key are the soak's and nothing else's.
  const key = await net.mintPoolKey("soak");
  const routes: Route[] = net.gateways.map((g) => ({
    kind: "http-connect",
    port: g.httpPort,
    auth: `${key.user}:${key.secret}`,
  }));
  const route = (i: number) => routes[i % routes.length]!;
  const edges = [...net.relays, ...net.gateways];
  const everyFootprint = () =>
    Promise.all([Promise.all(edges.map((e) => footprint(e.service))), footprintOf(peers)]);
  const quiet = async () => {
    for (let i = 0; i < 100; i++) {
      const busy = await Promise.all([
        ...net.gateways.map((g) => scrapeMetric(g.metrics, "gateway_tunnels_active")),
        ...net.relays.map((r) => scrapeMetric(r.metrics, "relay_tunnels")),
      ]);
      if (busy.every((n) => n === 0)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  // Warm-up: a round of tunnels so lazily made state (connection pools, JIT, the key's counters)
  // exists before the "before" readings.
  await hashTunnels({ route, target, tunnels: s.concurrency, concurrency: s.concurrency, maxBytes: 4096 });
  await quiet();
  await new Promise((r) => setTimeout(r, s.settleMs));
  const usedBefore = Number((await net.redis.get(keys.credentialUsed(key.keyId))) ?? 0);
  const [before, peersBefore] = await everyFootprint();
  const keysBefore = await redisKeys(net);
  const receivedBefore = target.received;

  // Two halves with a reading between: growth in the first half is a heap sizing itself to the
  // load; a leak keeps growing in the second.
  const half = (n: number) =>
    hashTunnels({ route, target, tunnels: n, concurrency: s.concurrency, maxBytes: s.maxBytes });
  const t0 = performance.now();
  const first = await half(Math.ceil(s.tunnels / 2));
  let seconds = (performance.now() - t0) / 1000;
  await quiet();
  await new Promise((res) => setTimeout(res, s.settleMs));
  const [mid, peersMid] = await everyFootprint();
  const t1 = performance.now();
  const second = await half(Math.floor(s.tunnels / 2));
  seconds += (performance.now() - t1) / 1000;
  await quiet();
  const r = { ...first };
  for (const k of ["ok", "setupFailed", "short", "corrupt", "missing", "up", "down"] as const)
    r[k] += second[k];
  r.firstError ||= second.firstError;
  const metered = Number((await net.redis.get(keys.credentialUsed(key.keyId))) ?? 0) - usedBefore;
  // Moved: what arrived at the far end each way (the target's count up, the clients' count down).
  const upArrived = target.received - receivedBefore;
  const moved = upArrived + r.down;
  // Lost: sent up but never at the target, plus expected down (payload and digests) never read.
  const lost = Math.max(0, r.up - upArrived) + r.missing;
  log(
    `soak: ${s.tunnels} tunnels in ${seconds.toFixed(1)} s: ${r.ok} ok, ${r.setupFailed} not opened, ${r.short} short, ${r.corrupt} corrupt; moved ${moved} B, metered ${metered} B${r.firstError ? ` (${r.firstError})` : ""}`,
  );

  await new Promise((res) => setTimeout(res, s.settleMs));
  const [after, peersAfter] = await everyFootprint();
  const keysAfter = await redisKeys(net);
  const growth = keyGrowth(keysBefore, keysAfter);
  await target.stop();

  const rows: Row[] = [
    {
      figure: `soak: ${s.tunnels.toLocaleString("en")} tunnels, random 0-${(s.maxBytes / 1024).toFixed(0)} KiB each way, checksummed, ${s.concurrency} at a time, over ${net.gateways.length} gateway(s)`,
      value: `${r.ok.toLocaleString("en")} ok; ${lost} B lost, ${r.corrupt} corrupt/reordered, ${r.short} short, ${r.setupFailed} not opened; ${(moved / 1048576).toFixed(1)} MiB in ${seconds.toFixed(1)} s`,
      anchor: "-",
      ratio: "-",
      goal: "0 lost, 0 reordered",
    },
    {
      figure: "soak billing: gateway's metered bytes for the soak key vs bytes moved (both ways)",
      value: `metered ${fmtBytes(metered)}, moved ${fmtBytes(moved)}: ${metered - moved >= 0 ? "+" : ""}${fmtBytes(metered - moved)}`,
      anchor: "-",
      ratio: moved ? `${(metered / moved).toFixed(6)}x` : "n/a",
      goal: "= moved + 0 (CONNECT head unbilled)",
    },
  ];
  const signed = (n: number) => `${n >= 0 ? "+" : ""}${n}`;
  const growthRow = (name: string, b: Footprint, m: Footprint, a: Footprint): Row => ({
    figure: `soak: ${name} after vs before (settled ${s.settleMs / 1000} s, full GC): fds / sockets / RSS / V8 heap; second half alone`,
    value: `${signed(a.fds - b.fds)} / ${signed(a.sockets - b.sockets)} / ${mib(a.rssKiB - b.rssKiB)} / ${mib(a.heapKiB - b.heapKiB)}; ${signed(a.fds - m.fds)} / ${signed(a.sockets - m.sockets)} / ${mib(a.rssKiB - m.rssKiB)} / ${mib(a.heapKiB - m.heapKiB)} (before: ${b.fds} / ${b.sockets} / ${(b.rssKiB / 1024).toFixed(0)} MiB / ${(b.heapKiB / 1024).toFixed(1)} MiB)`,
    anchor: "-",
    ratio: "-",
    goal: "no growth",
  });
  edges.forEach((e, i) => {
    rows.push(growthRow(e.service.name, before[i]!, mid[i]!, after[i]!));
  });
  if (peers.length)
    rows.push(
      growthRow(`the fleet's ${peers.length} SDK process(es), summed`, peersBefore, peersMid, peersAfter),
    );
  rows.push({
    figure: "soak: Redis keys after vs before (DBSIZE)",
    value: `${growth.net >= 0 ? "+" : ""}${growth.net} of ${keysBefore.size.toLocaleString("en")}; new: ${growth.summary || "none"}; ${growth.gone} gone`,
    anchor: "-",
    ratio: "-",
    goal: "no growth but TTL'd keys",
  });
  return { rows, ok: r.ok, lost, corrupt: r.corrupt, short: r.short, metered, moved };
}
