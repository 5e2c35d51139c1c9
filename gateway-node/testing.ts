/**
 * Test fixtures for gateway tests (not a test file): a tinyproxy "modem" and its pool listing,
 * loopback HTTP/HTTPS targets, gateway settings, credential cache entries written exactly as the API
 * writes them, and a curl runner.
 */
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Modem, startTinyproxy } from "../dev/modem.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint, listEndpoint } from "../shared/pool.ts";
import type { RedisClient } from "../shared/redis.ts";
import { stateEnv } from "../test/helpers/env.ts";

export { type Modem, startTinyproxy };

/**
 * Gateway settings for a test: this run's Redis, ports picked by the OS, loopback targets allowed;
 * `over` adds or replaces any.
 */
export function testGatewayEnv(over: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_URL: stateEnv().REDIS_URL,
    RELAY_SHARED_SECRET: "test-relay-secret-0123456789",
    GATEWAY_HTTP_PORT: "0",
    GATEWAY_SOCKS_PORT: "0",
    GATEWAY_ADMIN_PORT: "0",
    // a spawned main.ts defaults to production, which refuses the development flag below
    ENVIRONMENT: "test",
    GATEWAY_ALLOW_PRIVATE_TARGETS: "1",
    ...over,
  };
}

/** Lists a fast mobile modem exit of pool mbl at 127.0.0.1:`port`, as the operator API does. */
export function listModem(
  redis: Pick<RedisClient, "evalsha" | "eval">,
  input: { endpointId: string; country: string; port: number },
) {
  return listEndpoint(redis, {
    endpointId: input.endpointId,
    pool: "mbl",
    kind: "modem",
    country: input.country,
    ipType: "mobile",
    speedTier: "fast",
    host: "127.0.0.1",
    port: input.port,
  });
}

/** Lists a connected peer of pool peer, reached through its relay's internal URL, as the relay does. */
export function listPeer(
  redis: Pick<RedisClient, "evalsha" | "eval">,
  input: { deviceId: string; country: string; relayInternal: string },
) {
  return listEndpoint(redis, {
    endpointId: input.deviceId,
    deviceId: input.deviceId,
    pool: "peer",
    kind: "peer",
    country: input.country,
    ipType: "residential",
    speedTier: "fast",
    relayInternal: input.relayInternal,
  });
}

/** A tinyproxy modem listed in the pool, and the loopback targets customers reach through it. */
export interface ModemExit {
  endpointId: string;
  modem: Modem;
  targets: Targets;
  /** Delists the modem, then stops it and the targets. */
  stop(): Promise<void>;
}

export async function startModemExit(
  redis: Pick<RedisClient, "evalsha" | "eval">,
  input: { endpointId: string; country: string },
): Promise<ModemExit> {
  const [modem, targets] = await Promise.all([startTinyproxy(), startTargets()]);
  await listModem(redis, { ...input, port: modem.port });
  return {
    endpointId: input.endpointId,
    modem,
    targets,
    async stop() {
      await delistEndpoint(redis, input.endpointId);
      await Promise.all([modem.stop(), targets.stop()]);
    },
  };
}

/** A loopback port nothing listens on (listened on once, then closed): a modem there refuses at once. */
export async function closedPort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

export interface Targets {
  httpPort: number;
  httpsPort: number;
  /** the same HTTP target on ::1 */
  http6Port: number;
  caFile: string;
  stop(): Promise<void>;
}

/** Loopback HTTP and HTTPS targets: GET /bytes/<n> answers n bytes; anything else "hello". */
export async function startTargets(): Promise<Targets> {
  const dir = mkdtempSync(join(tmpdir(), "targets-"));
  const keyFile = join(dir, "key.pem");
  const certFile = join(dir, "cert.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { stdio: "ignore" },
  );
  const handler = (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => {
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? "");
    if (!m) {
      res.writeHead(200, { "Content-Type": "text/plain" }).end("hello");
      return;
    }
    let left = Number(m[1]);
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": String(left) });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          res.once("drain", pump);
          return;
        }
      }
      res.end();
    };
    res.on("close", () => {
      left = 0;
    });
    pump();
  };
  const http: Server = createServer(handler);
  const https = createHttpsServer({ key: readFileSync(keyFile), cert: readFileSync(certFile) }, handler);
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
  const http6: Server = createServer(handler);
  await new Promise<void>((r) => http6.listen(0, "::1", r));
  return {
    httpPort: (http.address() as AddressInfo).port,
    httpsPort: (https.address() as AddressInfo).port,
    http6Port: (http6.address() as AddressInfo).port,
    caFile: certFile,
    async stop() {
      http.closeAllConnections();
      https.closeAllConnections();
      http6.closeAllConnections();
      await Promise.all([http, https, http6].map((srv) => new Promise((r) => srv.close(r))));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestCredential {
  keyId: string;
  secret: string;
  accountLabel: string;
  username(rest: string): string;
}

/** Writes cred:{keyId}, credsecret:{sha256}, credused:{keyId} as the API's cache mirror does. */
export async function makeCredential(
  redis: Pick<RedisClient, "hset" | "set">,
  opts: {
    capBytes?: number;
    tier?: "mbl" | "peer" | "any";
    maxConnections?: number;
    enabled?: boolean;
    expiresAt?: number;
    /** a dedicated port's endpoint (cred:{id} endpointId) */
    endpointId?: string;
  } = {},
): Promise<TestCredential> {
  const id = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  const keyId = `pk_${id}`;
  const secret = `pak_${crypto.randomUUID().replaceAll("-", "")}`;
  const accountLabel = `t${id}`;
  await redis.hset(keys.credential(keyId), {
    accountLabel,
    accountId: `acct_${id}`,
    enabled: opts.enabled === false ? "0" : "1",
    capBytes: String(opts.capBytes ?? 1024 * 1024 * 1024),
    expiresAt: String(opts.expiresAt ?? 0),
    tier: opts.tier ?? "any",
    maxConnections: String(opts.maxConnections ?? 0),
    suspendedReason: "",
    ...(opts.endpointId ? { endpointId: opts.endpointId } : {}),
  });
  await redis.set(keys.credentialSecret(createHash("sha256").update(secret).digest("hex")), keyId);
  await redis.set(keys.credentialUsed(keyId), "0");
  return { keyId, secret, accountLabel, username: (rest) => `psx_${accountLabel}-${rest}` };
}

export interface CurlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real curl binary; never follows anything but the given loopback URL. */
export function curl(args: string[], timeoutMs = 30_000): Promise<CurlResult> {
  return new Promise((resolve) => {
    execFile(
      "curl",
      ["-sS", "--max-time", String(Math.ceil(timeoutMs / 1000)), ...args],
      { maxBuffer: 64 * 1024 * 1024, encoding: "utf8" },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

/** A GET through an HTTP proxy (`http://user:secret@host:port`): curl's "<status> <bytes received>". */
export async function curlStatusAndSize(proxyUrl: string, targetUrl: string): Promise<string> {
  const r = await curl([
    "-s",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code} %{size_download}",
    "-x",
    proxyUrl,
    targetUrl,
  ]);
  return r.stdout;
}

/**
 * A CONNECT tunnel through the gateway's HTTP port to 127.0.0.1:`targetPort`, held open by the test;
 * resolves with the socket once the gateway answered 200, rejects with the gateway's whole answer.
 */
export function openConnectTunnel(
  port: number,
  auth: { username: string; secret: string },
  targetPort: number,
  /** the customer's own address (any of 127/8): its failed-login count is its own */
  localAddress?: string,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: "127.0.0.1", localAddress });
    const basic = Buffer.from(`${auth.username}:${auth.secret}`).toString("base64");
    s.write(`CONNECT 127.0.0.1:${targetPort} HTTP/1.1\r\nProxy-Authorization: Basic ${basic}\r\n\r\n`);
    let head = "";
    const onData = (d: Buffer) => {
      head += d.toString();
      if (head.startsWith("HTTP/1.1 200")) {
        s.off("data", onData);
        resolve(s);
      }
    };
    s.on("data", onData);
    s.on("error", reject);
    // a refusal is a whole answer, then the close
    s.on("close", () => reject(new Error(head || "closed before an answer")));
  });
}
