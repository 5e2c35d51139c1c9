// The production path of the long-lived half, on this machine: the relay, gateway and prober started
// exactly as the systemd units start them (ExecStart, with the unit's EnvironmentFile example and
// Environment= lines), in production mode, against a Redis that speaks only TLS (as Upstash does) with
// a throwaway CA; one customer request goes gateway -> relay -> peer -> target. A CA the processes do
// not trust, or a plain server behind rediss://, stops them with a message that says so.
//
// With PEERPROXY_TEST_IMAGE set (scripts/check-image.sh), each process runs in that image of
// deploy/Dockerfile instead, with the unit's command, environment and this machine's loopback (host
// network): the same checks, made of the image that Fly runs. Without Docker the variable stays
// unset and the processes run from the checkout.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { curl, listPeer, makeCredential, startTargets, type Targets } from "../gateway-node/testing.ts";
import { connectPeer, type TestPeer } from "../relay-node/testing/peer.ts";
import { peerToken } from "../relay-node/testing/relay.ts";
import { randomHex } from "../shared/ids.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "./helpers/env.ts";

const root = join(import.meta.dirname, "..");
const tmp = mkdtempSync(join(stateEnv().PEERPROXY_TEST_TMP, "prod-"));
const image = process.env.PEERPROXY_TEST_IMAGE;
/** Containers this file started, removed at the end whatever became of their `docker run`. */
const containers: string[] = [];
/** How long a process gets to start, and a test to run: a container may take seconds to create. */
const START_MS = image ? 120_000 : 20_000;
const TEST_MS = image ? 600_000 : 90_000;

/** A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`. */
function makeCa(dir: string) {
  mkdirSync(dir, { recursive: true });
  const f = (name: string) => join(dir, name);
  const ssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });
  const subj = (cn: string) => ["-subj", `/CN=${cn}`];
  ssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    ...subj("peerproxy test CA"),
    "-keyout",
    f("ca.key"),
    "-out",
    f("ca.pem"),
  );
  ssl(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    ...subj("127.0.0.1"),
    "-keyout",
    f("server.key"),
    "-out",
    f("server.csr"),
  );
  writeFileSync(f("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  ssl(
    "x509",
    "-req",
    "-in",
    f("server.csr"),
    "-CA",
    f("ca.pem"),
    "-CAkey",
    f("ca.key"),
    "-CAcreateserial",
    "-out",
    f("server.pem"),
    "-days",
    "1",
    "-extfile",
    f("ext.cnf"),
  );
  return { ca: f("ca.pem"), cert: f("server.pem"), key: f("server.key") };
}
/** A unit file's ExecStart and Environment= lines; /opt/peerproxy is this checkout. */
function unit(name: string) {
  const text = readFileSync(join(root, "deploy/systemd", `peerproxy-${name}.service`), "utf8");
  const line = (key: string) =>
    text
      .split("\n")
      .filter((l) => l.startsWith(`${key}=`))
      .map((l) => l.slice(key.length + 1));
  const [exec] = line("ExecStart");
  const [workdir] = line("WorkingDirectory");
  const [envFile] = line("EnvironmentFile");
  if (!exec || !workdir || !envFile)
    throw new Error(`${name}: ExecStart, WorkingDirectory and EnvironmentFile`);
  const [bin, ...args] = exec.split(/\s+/);
  const env: Record<string, string> = {};
  for (const pair of line("Environment").flatMap((l) => l.split(/\s+/))) {
    const i = pair.indexOf("=");
    env[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return { bin: bin!, args, workdir, envFile, env };
}

/** KEY=value lines of an env file (comments and blanks skipped), as systemd reads them. */
function envFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of readFileSync(path, "utf8").split("\n")) {
    const l = raw.trim();
    if (!l || l.startsWith("#")) continue;
    const i = l.indexOf("=");
    out[l.slice(0, i)] = l.slice(i + 1);
  }
  return out;
}

/**
 * Starts `name` as its unit does: the unit's command from the checkout, the example env file the
 * runbook installs, then what this machine needs (loopback ports, this run's TLS Redis).
 */
function startUnit(name: string, over: Record<string, string>): Service {
  const u = unit(name);
  expect(u.bin).toBe("/usr/bin/node");
  expect(u.workdir).toBe("/opt/peerproxy");
  const example = join(root, "deploy/env", `${name}.env.example`);
  expect(u.envFile).toBe(`/etc/peerproxy/${name}.env`);
  // Only the variables a process reads: a clean environment, as systemd gives a unit.
  const env: Record<string, string | undefined> = {};
  for (const k of Object.keys(process.env)) env[k] = undefined;
  if (image) {
    // The image's entry point is node, its working directory the app: the unit's arguments as they are.
    const container = `peerproxy-test-${name}-${randomHex(4)}`;
    containers.push(container);
    const vars = { ...envFile(example), ...u.env, ...over };
    return startProcess(
      `image-${name}`,
      "docker",
      [
        "run",
        "--rm",
        "--name",
        container,
        "--network",
        "host",
        // The certificates this test made, where the variables name them (read-only).
        ...[tmp, dirname(targets.caFile)].flatMap((d) => ["-v", `${d}:${d}:ro`]),
        ...Object.entries(vars).flatMap(([k, v]) => ["-e", `${k}=${v}`]),
        image,
        ...u.args,
      ],
      { cwd: root },
    );
  }
  return startProcess(`unit-${name}`, process.execPath, u.args, {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: tmp, ...env, ...envFile(example), ...u.env, ...over },
  });
}

/** The process's exit code, or "running" if it is still up after START_MS. */
function exitWithin(svc: Service): Promise<unknown> {
  return Promise.race([svc.exited, new Promise((r) => setTimeout(() => r("running"), START_MS))]);
}

let plainRedis: TcpRedis;
let tlsPort: number;
let redisSrv: Service;
let trusted: ReturnType<typeof makeCa>;
let stranger: ReturnType<typeof makeCa>;
let targets: Targets;
const started: Service[] = [];

beforeAll(async () => {
  trusted = makeCa(join(tmp, "trusted"));
  stranger = makeCa(join(tmp, "stranger"));
  // Redis with a plain port for this test's own seeding and a TLS port for the processes.
  const plainPort = await freePort();
  tlsPort = await freePort();
  redisSrv = startProcess("redis-tls", "redis-server", [
    "--port",
    String(plainPort),
    "--bind",
    "127.0.0.1",
    "--tls-port",
    String(tlsPort),
    "--tls-cert-file",
    trusted.cert,
    "--tls-key-file",
    trusted.key,
    "--tls-ca-cert-file",
    trusted.ca,
    "--tls-auth-clients",
    "no",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    tmp,
  ]);
  plainRedis = tcpRedis(`redis://127.0.0.1:${plainPort}`);
  await waitUntil(
    async () => (await plainRedis.ping().catch(() => "")) === "PONG",
    10_000,
    "redis-server (TLS)",
  );
  targets = await startTargets();
  // The image runs as its unprivileged user: the certificates must be readable to it (not the keys).
  if (image)
    for (const f of [tmp, join(tmp, "trusted"), join(tmp, "stranger"), dirname(targets.caFile)])
      chmodSync(f, 0o755);
}, 60_000);

afterAll(async () => {
  for (const s of started.reverse()) await s.stop();
  for (const c of containers)
    try {
      execFileSync("docker", ["rm", "-f", c], { stdio: "ignore" });
    } catch {
      // Already gone with its `docker run --rm`.
    }
  await targets?.stop();
  await plainRedis?.close();
  await redisSrv?.stop();
});

describe("relay, gateway and prober as deployed", () => {
  it(
    "start from their systemd units in production mode against rediss:// and carry a customer request end to end",
    async () => {
      const jwtSecret = `jwt-${randomHex(16)}`;
      const sharedSecret = `rss-${randomHex(16)}`;
      const rediss = `rediss://127.0.0.1:${tlsPort}`;
      const tls = { REDIS_URL: rediss, NODE_EXTRA_CA_CERTS: trusted.ca, RELAY_SHARED_SECRET: sharedSecret };
      const relayPort = await freePort();
      const relayInternal = await freePort();
      const relay = startUnit("relay", {
        ...tls,
        JWT_SECRET: jwtSecret,
        RELAY_ID: `relay_prod_${randomHex(4)}`,
        RELAY_PORT: String(relayPort),
        RELAY_INTERNAL_PORT: String(relayInternal),
        RELAY_PUBLIC_URL: `ws://127.0.0.1:${relayPort}`,
        RELAY_INTERNAL_URL: `http://127.0.0.1:${relayInternal}`,
      });
      started.push(relay);
      await relay.waitFor(/relay ready/, START_MS);
      if (image) {
        // What the Dockerfile promises: node is PID 1 (it gets SIGTERM and drains), runs as the
        // unprivileged user, and has jemalloc loaded (the unit's LD_PRELOAD finds the image's copy).
        const inside = (cmd: string) =>
          execFileSync("docker", ["exec", containers.at(-1)!, "sh", "-c", cmd], { encoding: "utf8" }).trim();
        expect(inside("tr '\\0' ' ' < /proc/1/cmdline")).toBe("node relay-node/main.ts");
        expect(inside("id -u")).toBe("1000");
        expect(inside("grep -c libjemalloc /proc/1/maps")).not.toBe("0");
      }

      const target = `127.0.0.1:${targets.httpPort}`;
      const gateway = startUnit("gateway", {
        ...tls,
        GATEWAY_HOST: "127.0.0.1",
        GATEWAY_HTTP_PORT: "0",
        GATEWAY_SOCKS_PORT: "0",
        GATEWAY_ADMIN_PORT: "0",
        // A private deployment's exact allow-list: the one loopback target of this test, nothing else.
        GATEWAY_TARGET_HOSTS: target,
      });
      started.push(gateway);
      const ready = await gateway.waitFor(
        /"http":(\d+),"socks":(\d+),"admin":(\d+),"msg":"gateway ready"/,
        START_MS,
      );
      const [httpPort, , adminPort] = [ready[1], ready[2], ready[3]];

      const prober = startUnit("prober", {
        ...tls,
        DATABASE_URL: "", // probe history off: this test has no Postgres of its own
        PROBE_TARGET_HOST: "127.0.0.1",
        PROBE_TARGET_PORT: String(targets.httpsPort),
        PROBE_TARGET_CA: targets.caFile,
        PROBER_ADMIN_PORT: "0",
        PROBE_ENDPOINT_PREFIX: "agent_prodtest_",
      });
      started.push(prober);
      const proberReady = await prober.waitFor(/"admin":(\d+),"msg":"prober ready"/, START_MS);

      // Each process's health endpoint answers from its admin port, as the Fly checks ask it.
      for (const port of [relayInternal, Number(adminPort), Number(proberReady[1])]) {
        const r = await fetch(`http://127.0.0.1:${port}/health`);
        expect(r.status, `health on ${port}`).toBe(200);
      }

      // A peer on the relay, listed in a pool; a customer reaches the one allowed target through it.
      const deviceId = `agent_prodtest_${randomHex(4)}`;
      let peer: TestPeer | undefined;
      try {
        peer = await connectPeer({
          url: `ws://127.0.0.1:${relayPort}`,
          token: await peerToken(deviceId, jwtSecret),
        });
        await peer.waitFor("connected");
        const country = "qp";
        await listPeer(plainRedis, { deviceId, country, relayInternal: `http://127.0.0.1:${relayInternal}` });
        const cred = await makeCredential(plainRedis);
        const proxy = `http://${cred.username(`peer-${country}`)}:${cred.secret}@127.0.0.1:${httpPort}`;
        const via = (format: string, url: string) =>
          curl(["-x", proxy, "-o", "/dev/null", "-w", format, url]);
        const r = await via("%{http_code} %{size_download}", `http://${target}/bytes/65536`);
        expect(r.stdout, r.stderr).toBe("200 65536");
        // Any other target is refused in production, loopback or not.
        const other = await via("%{http_code}", `http://127.0.0.1:${targets.http6Port}/`);
        expect(other.stdout).toBe("403");
      } finally {
        peer?.close();
        await delistEndpoint(plainRedis, deviceId);
      }
    },
    TEST_MS,
  );

  it.each(["relay", "gateway", "prober"])(
    "the %s refuses a Redis whose certificate it does not trust, naming the certificate and never the password",
    async (name) => {
      const password = `pw${randomHex(8)}`;
      const svc = startUnit(name, {
        REDIS_URL: `rediss://default:${password}@127.0.0.1:${tlsPort}`,
        NODE_EXTRA_CA_CERTS: stranger.ca,
        RELAY_PORT: "0",
        RELAY_INTERNAL_PORT: "0",
        GATEWAY_HTTP_PORT: "0",
        GATEWAY_SOCKS_PORT: "0",
        GATEWAY_ADMIN_PORT: "0",
        PROBER_ADMIN_PORT: "0",
        DATABASE_URL: "",
      });
      started.push(svc);
      const code = await exitWithin(svc);
      expect(code, svc.output()).toBe(1);
      expect(svc.output()).toMatch(/TLS certificate is not trusted \([A-Z_]+\)/);
      expect(svc.output()).toContain(`rediss://127.0.0.1:${tlsPort}`);
      expect(svc.output()).not.toContain(password);
    },
    TEST_MS,
  );

  it.each([
    ["gateway", "GATEWAY_ALLOW_PRIVATE_TARGETS", "1"],
    ["prober", "PROBE_LOCAL_TARGET", "1"],
    ["prober", "NEON_WS_PROXY", "127.0.0.1:5433"],
  ])(
    "in production the %s refuses the development-only %s, naming it",
    async (name, variable, value) => {
      const svc = startUnit(name, { REDIS_URL: `rediss://127.0.0.1:${tlsPort}`, [variable]: value });
      started.push(svc);
      const code = await exitWithin(svc);
      expect(code, svc.output()).toBe(2);
      expect(svc.output()).toContain(`${variable}: development only`);
    },
    TEST_MS,
  );

  it(
    "a plain-text Redis behind rediss:// is named as a TLS handshake failure",
    async () => {
      const plainPort = plainRedis.raw.options.port;
      const svc = startUnit("relay", {
        REDIS_URL: `rediss://127.0.0.1:${plainPort}`,
        NODE_EXTRA_CA_CERTS: trusted.ca,
        RELAY_PORT: "0",
        RELAY_INTERNAL_PORT: "0",
      });
      started.push(svc);
      const code = await exitWithin(svc);
      expect(code, svc.output()).toBe(1);
      expect(svc.output()).toMatch(/cannot reach Redis at rediss:\/\/127\.0\.0\.1:\d+: .*TLS/);
    },
    TEST_MS,
  );
});
