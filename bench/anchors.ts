// The tools an operator would otherwise pick, run on loopback in the same bench run so ratios hold
// on any machine: tinyproxy (HTTP CONNECT), dante (SOCKS5), rathole (websocket and TCP transports,
// built with cargo into a cache outside the repo). Each start either returns the anchor or says why
// it is missing; the table prints that reason.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { startTinyproxy } from "../dev/modem.ts";
import { freePort, GiveUp, type Service, startProcess, waitUntil } from "../dev/proc.ts";
import type { Route } from "./measure.ts";

export type Anchor =
  /** `pids`: the anchor's own processes, where the bench reads their CPU time */
  { ok: true; route: Route; stop(): Promise<void>; pids?: number[] } | { ok: false; why: string };

export const CACHE_DIR = process.env.PEERPROXY_BENCH_CACHE ?? join(homedir(), ".cache", "peerproxy-bench");
export const RATHOLE_BIN = join(CACHE_DIR, "rathole", "bin", "rathole");

function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** apt-get install when a Debian package is missing and we are root; returns why not otherwise. */
export function ensureDebianPackage(pkg: string, binary: string): string | undefined {
  if (have(binary) || existsSync(binary)) return undefined;
  if (process.getuid?.() !== 0) return `${pkg} not installed (apt-get install ${pkg} needs root)`;
  const r = spawnSync("apt-get", ["install", "-y", "--no-install-recommends", pkg], {
    stdio: "ignore",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  if (r.status !== 0 || !(have(binary) || existsSync(binary)))
    return `${pkg}: apt-get install failed (exit ${r.status}); try apt-get update first`;
  return undefined;
}

async function listening(port: number, svc: Service, what: string) {
  await waitUntil(
    async () => {
      if (svc.child.exitCode !== null) throw new GiveUp(`${what} exited: ${svc.output().slice(-500)}`);
      return new Promise<boolean>((resolve) => {
        const s = connect(port, "127.0.0.1");
        s.on("connect", () => {
          s.destroy();
          resolve(true);
        });
        s.on("error", () => resolve(false));
      });
    },
    15_000,
    `${what} on ${port}`,
  );
}

export async function startTinyproxyAnchor(): Promise<Anchor> {
  const why = ensureDebianPackage("tinyproxy", "tinyproxy");
  if (why) return { ok: false, why };
  // The same tinyproxy as the local network's modem, with room for every concurrent customer.
  const proxy = await startTinyproxy({ maxClients: 2048 });
  return { ok: true, route: { kind: "http-connect", port: proxy.port }, stop: proxy.stop };
}

export async function startDanteAnchor(): Promise<Anchor> {
  const why = ensureDebianPackage("dante-server", "/usr/sbin/danted");
  if (why) return { ok: false, why };
  const dir = mkdtempSync(join(tmpdir(), "bench-dante-"));
  const port = await freePort();
  const conf = join(dir, "danted.conf");
  writeFileSync(
    conf,
    [
      "logoutput: stderr",
      `internal: 127.0.0.1 port = ${port}`,
      "external: 127.0.0.1",
      "clientmethod: none",
      "socksmethod: none",
      "user.privileged: root",
      "user.unprivileged: nobody",
      "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }",
      "socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }",
      "",
    ].join("\n"),
  );
  const svc = startProcess("danted", "/usr/sbin/danted", ["-f", conf, "-N", "2"]);
  const stop = async () => {
    await svc.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await listening(port, svc, "danted");
  } catch (err) {
    await stop();
    throw err;
  }
  return { ok: true, route: { kind: "socks5", port }, stop };
}

/**
 * Builds rathole (crates.io) into CACHE_DIR with cargo, niced; minutes on 2 cores the first time.
 * Call early and await late. Resolves with why it could not, or undefined when the binary is there.
 * First with rathole's own lockfile; when that fails (its pinned `time` 0.3 does not compile on
 * rustc 1.80 and later), again with the newest compatible dependencies.
 */
export function buildRathole(): Promise<string | undefined> {
  if (existsSync(RATHOLE_BIN)) return Promise.resolve(undefined);
  if (!have("cargo")) return Promise.resolve("rathole: cargo not found (install rustup/cargo to build it)");
  mkdirSync(CACHE_DIR, { recursive: true });
  const install = (locked: boolean) => {
    const svc = startProcess(locked ? "cargo" : "cargo-unlocked", "nice", [
      "-n",
      "19",
      "cargo",
      "install",
      ...(locked ? ["--locked"] : []),
      "rathole",
      "--root",
      join(CACHE_DIR, "rathole"),
      "-j",
      "1",
    ]);
    return svc.exited.then((code) =>
      code === 0 && existsSync(RATHOLE_BIN)
        ? undefined
        : `rathole: cargo install${locked ? " --locked" : ""} failed (exit ${code}): ${svc.output().trim().split("\n").slice(-1)[0]}`,
    );
  };
  return install(true).then((why) => (why ? install(false) : undefined));
}

/** rathole server + client on loopback, forwarding a local port to the target (one hop). */
export async function startRatholeAnchor(
  transport: "websocket" | "tcp",
  targetPort: number,
): Promise<Anchor> {
  if (!existsSync(RATHOLE_BIN)) return { ok: false, why: "rathole binary not built" };
  const dir = mkdtempSync(join(tmpdir(), `bench-rathole-${transport}-`));
  const [control, service] = [await freePort(), await freePort()];
  const transportToml =
    transport === "websocket"
      ? ['type = "websocket"', "[TRANSPORT.websocket]", "tls = false"]
      : ['type = "tcp"'];
  const write = (name: string, side: "server" | "client", body: string[]) => {
    const text = [`[${side}]`, ...body, `[${side}.transport]`, ...transportToml].join("\n");
    writeFileSync(join(dir, name), `${text.replaceAll("TRANSPORT", `${side}.transport`)}\n`);
  };
  write("server.toml", "server", [
    `bind_addr = "127.0.0.1:${control}"`,
    '[server.services.bench]\ntoken = "bench-only-token"',
    `bind_addr = "127.0.0.1:${service}"`,
  ]);
  write("client.toml", "client", [
    `remote_addr = "127.0.0.1:${control}"`,
    '[client.services.bench]\ntoken = "bench-only-token"',
    `local_addr = "127.0.0.1:${targetPort}"`,
  ]);
  const server = startProcess(`rathole-${transport}-server`, RATHOLE_BIN, [
    "--server",
    join(dir, "server.toml"),
  ]);
  const client = startProcess(`rathole-${transport}-client`, RATHOLE_BIN, [
    "--client",
    join(dir, "client.toml"),
  ]);
  // The config directory goes with the processes.
  const stop = async () => {
    await Promise.all([server.stop(), client.stop()]);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await listening(service, server, "rathole server");
    // The service port listens before the client's control channel is up: wait for the handshake.
    await client.waitFor(/Control channel established/i, 15_000);
  } catch (err) {
    await stop();
    return { ok: false, why: `rathole ${transport}: ${(err as Error).message.split("\n")[0]}` };
  }
  return {
    ok: true,
    route: { kind: "direct", port: service },
    stop,
    pids: [server.child.pid!, client.child.pid!],
  };
}
