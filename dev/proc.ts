// Child processes for the local stack and integration tests: each in its own process group so
// that stopping it also stops whatever it spawned (wrangler -> workerd), with a SIGKILL backstop.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Service {
  name: string;
  child: ChildProcess;
  /** Everything the process printed so far (stdout and stderr), for diagnostics and log assertions. */
  output(): string;
  /** Resolves when a line matching re appears (or rejects on exit/timeout). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

const live = new Set<Service>();
// Set by stopAll(): a launcher interrupted mid-start must not start anything after its stop began.
let closing = false;

export function startProcess(
  name: string,
  cmd: string,
  args: string[],
  opts: {
    env?: Record<string, string | undefined>;
    cwd?: string;
    echo?: boolean;
    /** Run as another user (root starting Postgres). */
    uid?: number;
    gid?: number;
    /** What stop() sends by default (Postgres: SIGINT, its fast shutdown). */
    stopSignal?: NodeJS.Signals;
  } = {},
): Service {
  if (closing) throw new Error(`not starting ${name}: stopping`);
  const child = spawn(cmd, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
    // Own process group: a terminal's Ctrl-C reaches only the launcher, which stops children itself.
    detached: true,
    uid: opts.uid,
    gid: opts.gid,
  });
  let buf = "";
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    const text = d.toString("utf8");
    buf += text;
    if (buf.length > 4_000_000) buf = buf.slice(-2_000_000);
    if (opts.echo) for (const line of text.split(/\n/)) if (line) process.stdout.write(`[${name}] ${line}\n`);
    for (const w of [...waiters]) w();
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code, sig) => {
      live.delete(svc);
      // 'exit' can come before the last output is read: give the pipes a moment to drain (not
      // 'close', which a grandchild still holding the pipe could delay indefinitely).
      const drained = [child.stdout!, child.stderr!].map(
        (s) => new Promise<void>((r) => (s.readableEnded || s.destroyed ? r() : s.once("close", () => r()))),
      );
      const cap = new Promise<void>((r) => setTimeout(r, 1000).unref());
      void Promise.race([Promise.all(drained), cap]).then(() => {
        for (const w of [...waiters]) w();
        resolve(code ?? (sig ? 128 : null));
      });
    });
    child.on("error", () => resolve(127));
  });
  const svc: Service = {
    name,
    child,
    exited,
    output: () => buf,
    waitFor(re, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        let from = 0;
        const check = () => {
          const m = re.exec(buf.slice(from));
          if (m) {
            done();
            resolve(m);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            done();
            reject(
              new Error(
                `${name} exited (${child.exitCode ?? child.signalCode}) before ${re}:\n${buf.slice(-3000)}`,
              ),
            );
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(`${name}: timed out after ${timeoutMs} ms waiting for ${re}:\n${buf.slice(-3000)}`),
          );
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        from = 0;
        waiters.add(check);
        check();
      });
    },
    async stop(signal = opts.stopSignal ?? "SIGTERM", graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      killGroup(child, signal);
      const timer = setTimeout(() => killGroup(child, "SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      killGroup(child, "SIGKILL"); // grandchildren that ignored the signal
      return code;
    },
  };
  live.add(svc);
  return svc;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals) {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {}
  }
}

/** Synchronous last resort on process exit: no child outlives us. */
export function killAllNow() {
  for (const s of live) killGroup(s.child, "SIGKILL");
}

export async function stopAll() {
  closing = true;
  await Promise.all([...live].map((s) => s.stop()));
}

// Ports handed out on this machine, across processes: test files run three at a time, each starting
// launchers that pick ports of their own, and a port another process picked but has not bound yet
// looks free. A file per port in a shared directory (created exclusively) claims it; a claim older
// than PORT_CLAIM_MS is stale (its taker has long bound the port or given up).
const PORT_CLAIM_MS = 10 * 60_000;
const claimDir = join(tmpdir(), `peerproxy-ports-${process.getuid?.() ?? "user"}`);

function claimPort(port: number): boolean {
  const file = join(claimDir, String(port));
  const create = () => writeFileSync(file, String(process.pid), { flag: "wx" });
  try {
    try {
      create();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      mkdirSync(claimDir, { recursive: true, mode: 0o700 });
      create();
    }
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") return true; // no claim directory: unclaimed, as before
  }
  try {
    if (Date.now() - statSync(file).mtimeMs < PORT_CLAIM_MS) return false;
    // Stale. Renaming it away succeeds for one process only; that one may claim the port anew.
    const away = `${file}.${process.pid}.stale`;
    renameSync(file, away);
    rmSync(away, { force: true });
    create();
    return true;
  } catch {
    return false;
  }
}

/**
 * A free loopback port for a server a test or the launcher is about to start. Picked below Linux's
 * ephemeral range (32768-60999), which port 0 draws from: there, an outgoing connection of any
 * concurrent test can take the port between this check and the server's bind. Claimed machine-wide
 * (claimPort), so no other process's freePort hands it out before the taker binds.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (!(await canListen(port))) continue;
    if (claimPort(port)) return port;
  }
  return listenOn(0);
}

/** Whether 127.0.0.1:port is free to listen on right now. */
export async function canListen(port: number): Promise<boolean> {
  return listenOn(port).then(
    () => true,
    () => false,
  );
}

function listenOn(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(port, "127.0.0.1", () => {
      const addr = srv.address();
      const bound = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(bound));
    });
  });
}

/** Thrown inside a waitUntil predicate: stop waiting now (the awaited thing can no longer happen). */
export class GiveUp extends Error {}

/**
 * Polls `fn` every 100 ms until it returns a truthy value. Other errors it throws are kept as the
 * reason shown on timeout; a GiveUp ends the wait at once (a process that exited will not listen).
 */
export async function waitUntil<T>(
  fn: () => Promise<T | undefined | false>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      if (err instanceof GiveUp) throw err;
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}
