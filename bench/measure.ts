// The bench's clients: HTTP CONNECT and SOCKS5 CONNECT through any proxy, a plain TCP connect for
// direct and rathole anchors, then a GET over the opened stream. Each measures setup (until the
// stream is usable), a small request's total, or bytes per second. Loopback targets only.
import { readdirSync, readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";

/** How a client reaches the target: through a proxy, or straight to an address (direct, rathole). */
export type Route =
  | { kind: "http-connect"; port: number; auth?: string }
  | { kind: "socks5"; port: number; auth?: { username: string; password: string } }
  | { kind: "direct"; port: number };

export interface Target {
  host: string;
  port: number;
}

function readUntil(sock: Socket, done: (buf: Buffer) => number): Promise<{ head: Buffer; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      const end = done(buf);
      if (end > 0) {
        cleanup();
        resolve({ head: buf.subarray(0, end), rest: buf.subarray(end) });
      }
    };
    const onEnd = () => {
      cleanup();
      reject(
        new Error(`closed during handshake after ${buf.length} bytes: ${buf.toString("latin1", 0, 120)}`),
      );
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("error", onError);
    };
    sock.on("data", onData);
    sock.on("end", onEnd);
    sock.on("error", onError);
  });
}

/** Opens a stream to `target` along `route`; resolves with the socket once bytes can flow. */
export async function openStream(route: Route, target: Target, timeoutMs = 30_000): Promise<Socket> {
  const sock = connect({ host: "127.0.0.1", port: route.port });
  sock.setNoDelay(true);
  const timer = setTimeout(() => sock.destroy(new Error(`setup timed out after ${timeoutMs} ms`)), timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", reject);
    });
    if (route.kind === "http-connect") {
      const auth = route.auth
        ? `Proxy-Authorization: Basic ${Buffer.from(route.auth).toString("base64")}\r\n`
        : "";
      sock.write(
        `CONNECT ${target.host}:${target.port} HTTP/1.1\r\nHost: ${target.host}:${target.port}\r\n${auth}\r\n`,
      );
      const { head, rest } = await readUntil(sock, (b) => {
        const i = b.indexOf("\r\n\r\n");
        return i < 0 ? 0 : i + 4;
      });
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.toString("latin1"))?.[1];
      if (status !== "200") throw new Error(`CONNECT answered ${head.toString("latin1").split("\r\n")[0]}`);
      if (rest.length) sock.unshift(rest);
    } else if (route.kind === "socks5") {
      const a = route.auth;
      sock.write(Buffer.from(a ? [5, 1, 2] : [5, 1, 0]));
      const greet = await readUntil(sock, (b) => (b.length >= 2 ? 2 : 0));
      if (greet.head[1] === 2 && a) {
        const u = Buffer.from(a.username);
        const p = Buffer.from(a.password);
        sock.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
        const ok = await readUntil(sock, (b) => (b.length >= 2 ? 2 : 0));
        if (ok.head[1] !== 0) throw new Error("SOCKS5 login refused");
      } else if (greet.head[1] !== 0) throw new Error(`SOCKS5 method ${greet.head[1]} refused`);
      const host = Buffer.from(target.host);
      const port = Buffer.from([target.port >> 8, target.port & 255]);
      sock.write(Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), host, port]));
      const reply = await readUntil(sock, (b) => {
        if (b.length < 5) return 0;
        const len = b[3] === 1 ? 4 : b[3] === 4 ? 16 : 1 + b[4]!;
        return b.length >= 4 + len + 2 ? 4 + len + 2 : 0;
      });
      if (reply.head[1] !== 0) throw new Error(`SOCKS5 CONNECT reply ${reply.head[1]}`);
      if (reply.rest.length) sock.unshift(reply.rest);
    }
    return sock;
  } catch (err) {
    sock.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Sends a GET /bytes/n over an opened stream and reads the whole answer; returns body bytes. */
export function getBytes(sock: Socket, target: Target, n: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let headerDone = false;
    let head: Buffer = Buffer.alloc(0);
    let body = 0;
    let expected = -1;
    sock.on("data", (d: Buffer) => {
      if (!headerDone) {
        head = Buffer.concat([head, d]);
        const i = head.indexOf("\r\n\r\n");
        if (i < 0) return;
        headerDone = true;
        const text = head.toString("latin1", 0, i);
        expected = Number(/content-length:\s*(\d+)/i.exec(text)?.[1] ?? -1);
        body = head.length - i - 4;
      } else body += d.length;
      if (expected >= 0 && body >= expected) {
        sock.destroy();
        resolve(body);
      }
    });
    sock.on("error", reject);
    sock.on("close", () =>
      expected >= 0 && body >= expected ? resolve(body) : reject(new Error(`short body: ${body}`)),
    );
    sock.write(
      `GET /bytes/${n} HTTP/1.1\r\nHost: ${target.host}:${target.port}\r\nConnection: close\r\n\r\n`,
    );
  });
}

export interface LatencyRun {
  /** ms until the stream was usable (proxy answered 200 / SOCKS5 succeeded / TCP connected) */
  setup: number[];
  /** ms for setup + a small GET */
  total: number[];
  errors: number;
  firstError?: string;
  seconds: number;
}

/** One stream opened and a GET of `bytes` over it, timed into `out` (or counted as an error). */
async function timedStream(out: LatencyRun, route: Route, target: Target, bytes: number): Promise<void> {
  const start = performance.now();
  try {
    const sock = await openStream(route, target);
    out.setup.push(performance.now() - start);
    await getBytes(sock, target, bytes);
    out.total.push(performance.now() - start);
  } catch (err) {
    out.errors++;
    out.firstError ??= (err as Error).message;
  }
}

/**
 * `concurrency` customers, each opening streams back to back until `requests` streams were opened
 * in all: setup latency and setup + GET of `bytes`, per request.
 */
export async function latencyRun(opts: {
  route: Route | ((i: number) => Route);
  target: Target;
  concurrency: number;
  requests: number;
  bytes: number;
}): Promise<LatencyRun> {
  const out: LatencyRun = { setup: [], total: [], errors: 0, seconds: 0 };
  let issued = 0;
  const t0 = performance.now();
  const customer = async () => {
    while (issued < opts.requests) {
      const i = issued++;
      const route = typeof opts.route === "function" ? opts.route(i) : opts.route;
      await timedStream(out, route, opts.target, opts.bytes);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, customer));
  out.seconds = (performance.now() - t0) / 1000;
  return out;
}

/**
 * `customers` customers who each pause between streams, as people and agents do: a pause drawn
 * from an exponential distribution of mean `thinkMs` (the first one from a uniform spread over
 * it, so they do not start together), then a stream opened and a GET of `bytes`, until
 * `seconds` are up (no stream starts after). The offered rate is about customers / think time; unlike
 * `latencyRun` it does not grow to whatever the proxy can take, so the latencies are those of a
 * proxy under that load, not of a queue in front of a saturated one.
 */
export async function thinkTimeRun(opts: {
  route: Route;
  target: Target;
  customers: number;
  thinkMs: number;
  seconds: number;
  bytes: number;
}): Promise<LatencyRun> {
  const out: LatencyRun = { setup: [], total: [], errors: 0, seconds: opts.seconds };
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const end = performance.now() + opts.seconds * 1000;
  const customer = async () => {
    for (let wait = Math.random() * opts.thinkMs; ; wait = -Math.log(1 - Math.random()) * opts.thinkMs) {
      if (performance.now() + wait >= end) return;
      await pause(wait);
      await timedStream(out, opts.route, opts.target, opts.bytes);
    }
  };
  await Promise.all(Array.from({ length: opts.customers }, customer));
  return out;
}

/** Bytes per second of `tunnels` parallel streams, each fetching `bytesEach` (aggregate). */
export async function throughput(opts: {
  route: Route;
  target: Target;
  tunnels: number;
  bytesEach: number;
}): Promise<{ bytesPerSecond: number; errors: number; firstError?: string }> {
  let errors = 0;
  let firstError: string | undefined;
  const fail = (err: unknown) => {
    errors++;
    firstError ??= (err as Error).message;
  };
  const opened = await Promise.all(
    Array.from({ length: opts.tunnels }, () => openStream(opts.route, opts.target).catch(fail)),
  );
  const socks = opened.filter((s): s is Socket => s !== undefined);
  const t0 = performance.now();
  let moved = 0;
  await Promise.all(
    socks.map((s) =>
      getBytes(s, opts.target, opts.bytesEach).then((n) => {
        moved += n;
      }, fail),
    ),
  );
  const seconds = (performance.now() - t0) / 1000;
  return { bytesPerSecond: moved / seconds, errors, firstError };
}

export function percentile(xs: number[], p: number): number {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/**
 * The machine's CPU time from now (/proc/stat, all cores): `stolen()` is the share the hypervisor
 * gave to other machines (steal) while this one wanted it. Runs on a shared host differ by it.
 */
export function stealMeter(): { stolen(): number } {
  const read = () => {
    const n = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    return { steal: n[7] ?? 0, all: n.slice(0, 8).reduce((a, b) => a + b, 0) };
  };
  const start = read();
  return {
    stolen() {
      const now = read();
      return (now.steal - start.steal) / Math.max(1, now.all - start.all);
    },
  };
}

/**
 * Every process's CPU time (utime + stime, s) by pid with its name (a node process's script), from
 * /proc: read twice around a stretch, it names what was using the machine.
 */
export function allProcessCpu(): Map<number, { name: string; cpuSeconds: number }> {
  const out = new Map<number, { name: string; cpuSeconds: number }>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // A node process by its script (relay-node/main.ts, bench/fleet/main.ts...), else its command.
      const script = readFileSync(`/proc/${entry}/cmdline`, "utf8")
        .split("\0")
        .find((a) => /\.(ts|js|mjs)$/.test(a));
      const name = script
        ? script.split("/").slice(-2).join("/")
        : stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      out.set(Number(entry), { name, cpuSeconds: statCpuSeconds(stat) });
    } catch {
      // gone between the listing and the read
    }
  }
  return out;
}

/** utime + stime in seconds from a /proc/<pid>/stat line (user-hz ticks are 1/100 s). */
function statCpuSeconds(stat: string): number {
  // Fields after the command name (which may hold spaces): utime is the 14th field, stime the 15th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * A process's CPU time (s) on its main thread and on all its other threads. In a Node process the
 * others are mostly V8's helpers: concurrent marking and sweeping of major GCs, which GC pause
 * metrics (nodejs_gc_duration_seconds) do not count.
 */
export function threadCpu(pid: number): { main: number; others: number } {
  // Each thread read on its own and summed: the process's total less the main thread's, read a
  // moment apart in whole clock ticks, went a tick below zero on a short stretch.
  let main = 0;
  let others = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let cpu: number;
    try {
      cpu = statCpuSeconds(readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8"));
    } catch {
      continue; // the thread ended meanwhile
    }
    if (tid === String(pid)) main = cpu;
    else others += cpu;
  }
  return { main, others };
}

/** A process's resident memory (KiB) and CPU time (s) from /proc. */
export function procStats(pid: number): { rssKiB: number; cpuSeconds: number; writes: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  // write-family system calls (write, writev, sendmsg...): one per message a process hands the kernel
  const io = readFileSync(`/proc/${pid}/io`, "utf8");
  return {
    rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0),
    cpuSeconds: statCpuSeconds(readFileSync(`/proc/${pid}/stat`, "utf8")),
    writes: Number(/syscw:\s+(\d+)/.exec(io)?.[1] ?? 0),
  };
}
