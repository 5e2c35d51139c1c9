// DEV ONLY. Debian's tinyproxy standing in for a production modem's upstream HTTP proxy port: the
// local stack registers one as a pool `mbl` exit, and gateway/prober tests use it the same way.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, type Service, startProcess, waitUntil } from "./proc.ts";

export interface Modem {
  port: number;
  stop(): Promise<void>;
}

/**
 * Debian's tinyproxy on a free loopback port standing in for a production modem's proxy port;
 * with `basicAuth` it answers 407 to any request without those credentials, as a production modem should.
 */
export async function startTinyproxy(
  opts: {
    basicAuth?: { username: string; password: string };
    /** tinyproxy forks per client: the bench's anchor needs room for every concurrent customer */
    maxClients?: number;
  } = {},
): Promise<Modem> {
  const dir = mkdtempSync(join(tmpdir(), "modem-"));
  const port = await freePort();
  const conf = join(dir, "tinyproxy.conf");
  // No LogFile/Syslog: tinyproxy logs to stderr; no ConnectPort lines: CONNECT to any port.
  writeFileSync(
    conf,
    [
      `Port ${port}`,
      "Listen 127.0.0.1",
      "Timeout 60",
      `MaxClients ${opts.maxClients ?? 64}`,
      "Allow 127.0.0.1",
      "LogLevel Error",
      "DisableViaHeader Yes",
      ...(opts.basicAuth ? [`BasicAuth ${opts.basicAuth.username} ${opts.basicAuth.password}`] : []),
      "",
    ].join("\n"),
  );
  const svc: Service = startProcess("tinyproxy", "tinyproxy", ["-d", "-c", conf]);
  await waitUntil(
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect(port, "127.0.0.1");
        s.on("connect", () => {
          s.destroy();
          resolve(true);
        });
        s.on("error", () => resolve(false));
      }),
    10_000,
    "tinyproxy listening",
  );
  return {
    port,
    async stop() {
      await svc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
