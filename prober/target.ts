/**
 * A local HTTPS probe target for tests and the local stack: a throwaway CA and a server cert for
 * 127.0.0.1/localhost, generated at start with the openssl CLI (node:crypto cannot issue X.509),
 * serving GET /bytes/N (N bytes, Content-Length set). In production the target is configuration.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface ProbeTarget {
  host: string;
  port: number;
  caPem: string;
  stop(): Promise<void>;
}

/** Larger requests are refused so a typo in a test cannot make the target stream for minutes. */
export const MAX_TARGET_BYTES = 256 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, "peerproxy-target-");

/** A throwaway CA and a server certificate for 127.0.0.1, ::1 and localhost (openssl CLI). */
export function issueCertificates(): { caPem: string; keyPem: string; certPem: string } {
  const dir = mkdtempSync(join(tmpdir(), "probe-target-"));
  const p = (f: string) => join(dir, f);
  const ssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  try {
    ssl(
      "req",
      "-x509",
      ...ec,
      "-days",
      "2",
      "-subj",
      "/CN=peerproxy probe test CA",
      "-keyout",
      p("ca.key"),
      "-out",
      p("ca.pem"),
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
    );
    ssl("req", ...ec, "-subj", "/CN=localhost", "-keyout", p("srv.key"), "-out", p("srv.csr"));
    writeFileSync(
      p("srv.ext"),
      "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    ssl(
      "x509",
      "-req",
      "-in",
      p("srv.csr"),
      "-CA",
      p("ca.pem"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
      "-days",
      "2",
      "-out",
      p("srv.pem"),
      "-extfile",
      p("srv.ext"),
    );
    return {
      caPem: readFileSync(p("ca.pem"), "utf8"),
      keyPem: readFileSync(p("srv.key"), "utf8"),
      certPem: readFileSync(p("srv.pem"), "utf8"),
    };
  } catch (err) {
    throw new Error(
      `probe target: could not issue certificates with the openssl CLI (${(err as Error).message})`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * GET /bytes/N: N bytes with Content-Length, written with backpressure; anything else is a 404
 * saying `usage`. Shared with the plain-HTTP demo target (dev/targets.ts).
 */
export function serveBytes(req: IncomingMessage, res: ServerResponse, usage = "try GET /bytes/N\n"): void {
  const m = /^\/bytes\/(\d{1,10})$/.exec(req.url ?? "");
  const n = m ? Number(m[1]) : -1;
  if (req.method !== "GET" || n < 0 || n > MAX_TARGET_BYTES) {
    res.writeHead(404, { "content-type": "text/plain" }).end(usage);
    return;
  }
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(n) });
  let left = n;
  const pump = () => {
    while (left > 0) {
      const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= chunk.length;
      if (!res.write(chunk)) {
        res.once("drain", pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

/** Starts the target on 127.0.0.1 (port 0 = any free port). */
export async function startProbeTarget(opts: { port?: number } = {}): Promise<ProbeTarget> {
  const { caPem, keyPem, certPem } = issueCertificates();
  const server = createServer({ key: keyPem, cert: certPem }, (req, res) => serveBytes(req, res));
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    host: "127.0.0.1",
    port,
    caPem,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
