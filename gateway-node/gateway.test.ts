import { type AddressInfo, connect, createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { fixedClock } from "../shared/clock.ts";
import { keys } from "../shared/keys.ts";
import { memoryLogger } from "../shared/log.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { loadGatewayConfig } from "./config.ts";
import { type Gateway, startGateway } from "./gateway.ts";
import {
  closedPort,
  curl,
  listModem,
  type ModemExit,
  makeCredential,
  startModemExit,
  testGatewayEnv,
} from "./testing.ts";

// Country codes from the user-assigned ISO range, private to this file: parallel files never share an index.
const COUNTRY = "qm";
const redis = tcpRedis(stateEnv().REDIS_URL);
let exit: ModemExit;
let gw: Gateway;
/** Every line the main gateway of this file logs, for the request-id and no-secrets checks. */
const gwLogs: string[] = [];
const endpointId = `modem_${crypto.randomUUID().slice(0, 8)}`;

function gatewayEnv(over: Record<string, string> = {}) {
  return loadGatewayConfig(testGatewayEnv({ GATEWAY_FLUSH_MS: "200", ...over }));
}

beforeAll(async () => {
  exit = await startModemExit(redis, { endpointId, country: COUNTRY });
  gw = await startGateway(gatewayEnv(), { redis, log: memoryLogger(gwLogs, "gateway") });
});

afterAll(async () => {
  await gw?.close();
  await exit?.stop();
  await redis.close();
});

const used = async (keyId: string) => Number((await redis.get(keys.credentialUsed(keyId))) ?? 0);
/** Waits for the tunnel's final usage report (sent when the tunnel closes). */
async function settledUsage(keyId: string, atLeast: number): Promise<number> {
  await waitUntil(
    async () => (await used(keyId)) >= atLeast && gw.ctx.tunnels.size === 0,
    10_000,
    "usage flushed",
  );
  return used(keyId);
}

describe("gateway end to end through a tinyproxy modem exit", () => {
  it("curl -x forwards an absolute-URI GET and the credential is billed the bytes moved (within 1%)", async () => {
    const cred = await makeCredential(redis);
    const size = 1024 * 1024;
    const r = await curl([
      "-x",
      `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "-o",
      "/dev/null",
      "-D",
      "-",
      "-w",
      "size=%{size_download}\n",
      `http://127.0.0.1:${exit.targets.httpPort}/bytes/${size}`,
    ]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(r.stdout).toMatch(/x-request-id: req_/i);
    expect(r.stdout).toContain(`size=${size}`);
    const billed = await settledUsage(cred.keyId, size);
    expect(billed).toBeGreaterThanOrEqual(size);
    expect(billed).toBeLessThanOrEqual(size * 1.01);
  });

  it("curl CONNECTs to an HTTPS loopback target (TLS end to end) and is billed within 1%", async () => {
    const cred = await makeCredential(redis);
    const size = 2 * 1024 * 1024;
    const r = await curl([
      "-x",
      `http://${cred.username(`mbl-${COUNTRY}-sid-connect_${cred.keyId.slice(3)}-rot-sticky`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "--cacert",
      exit.targets.caFile,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download}",
      `https://127.0.0.1:${exit.targets.httpsPort}/bytes/${size}`,
    ]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(`200 ${size}`);
    const billed = await settledUsage(cred.keyId, size);
    expect(billed).toBeLessThanOrEqual(size * 1.01);
  });

  it("curl --socks5-hostname tunnels with the name resolved at the exit (RFC 1928 domain + RFC 1929 auth)", async () => {
    const cred = await makeCredential(redis);
    const size = 300_000;
    const args = (mode: string, host: string) => [
      mode,
      `127.0.0.1:${gw.socksPort}`,
      "--proxy-user",
      `${cred.username(`any-${COUNTRY}`)}:${cred.secret}`,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download}",
      `http://${host}:${exit.targets.httpPort}/bytes/${size}`,
    ];
    const byName = await curl(args("--socks5-hostname", "localhost"));
    expect(byName.stderr).toBe("");
    expect(byName.stdout).toBe(`200 ${size}`);
    const byIpv4 = await curl(args("--socks5", "127.0.0.1"));
    expect(byIpv4.stdout).toBe(`200 ${size}`);
    const billed = await settledUsage(cred.keyId, 2 * size);
    expect(billed).toBeLessThanOrEqual(2 * size * 1.01);

    const wrong = await curl([
      "--socks5-hostname",
      `127.0.0.1:${gw.socksPort}`,
      "--proxy-user",
      `${cred.username(`any-${COUNTRY}`)}:pak_wrong`,
      `http://localhost:${exit.targets.httpPort}/`,
    ]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/auth|SOCKS/i);
  });

  it("forwarded requests reuse the customer's keep-alive connection to the gateway", async () => {
    const cred = await makeCredential(redis);
    const url = `http://127.0.0.1:${exit.targets.httpPort}/`;
    const r = await curl([
      "-v",
      "-x",
      `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      url,
      url,
      url,
    ]);
    expect(r.stdout).toBe("hellohellohello");
    expect(r.stderr.match(/Re-using existing connection|Reusing existing/g)?.length).toBe(2);
  });

  it("SOCKS5 CONNECT to an IPv6 literal reaches a ::1 target", async () => {
    const cred = await makeCredential(redis);
    const r = await curl([
      "--socks5",
      `127.0.0.1:${gw.socksPort}`,
      "--proxy-user",
      `${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}`,
      `http://[::1]:${exit.targets.http6Port}/`,
    ]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("hello");
  });

  it("an unreachable target answers E_TARGET_UNREACHABLE (502 / SOCKS REP 4) and is reported for the circuit breaker", async () => {
    const cred = await makeCredential(redis);
    const closed = await closedPort();
    const r = await curl([
      "-x",
      `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "-p",
      "-v",
      `http://127.0.0.1:${closed}/`,
    ]);
    expect(r.stderr).toMatch(/CONNECT tunnel failed, response 502/);
    const socks = await curl([
      "--socks5",
      `127.0.0.1:${gw.socksPort}`,
      "--proxy-user",
      `${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}`,
      `http://127.0.0.1:${closed}/`,
    ]);
    expect(socks.stderr).toMatch(/SOCKS5.*\(4\)|unreachable/i);
    const reports = (await redis.raw.lrange(keys.tunnelFailures(), 0, 200)).map(
      (j) => JSON.parse(j) as { endpointId: string; reason: string },
    );
    expect(reports.filter((f) => f.endpointId === endpointId).length).toBeGreaterThanOrEqual(2);
  });

  it("an exit that takes bytes and closes without a reply is reported as closed_without_reply", async () => {
    const cred = await makeCredential(redis);
    // A target that reads and hangs up: what a peer broken at the TLS handshake looks like.
    const mute = createServer((s) => {
      s.on("error", () => {});
      s.once("data", () => s.destroy());
    });
    await new Promise<void>((r) => mute.listen(0, "127.0.0.1", r));
    const port = (mute.address() as AddressInfo).port;
    try {
      const r = await curl([
        "-x",
        `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
        "-p",
        `http://127.0.0.1:${port}/`,
      ]);
      expect(r.code).not.toBe(0);
      await waitUntil(
        async () => {
          const reports = (await redis.raw.lrange(keys.tunnelFailures(), 0, 50)).map(
            (j) => JSON.parse(j) as { endpointId: string; reason: string },
          );
          return reports.some((f) => f.endpointId === endpointId && f.reason === "closed_without_reply");
        },
        5000,
        "closed_without_reply reported",
      );
    } finally {
      mute.close();
    }
  });

  it("a dead modem is reported and the customer is served by the next endpoint", async () => {
    const country = "qn";
    const dead = `modem_dead_${crypto.randomUUID().slice(0, 8)}`;
    const live = `modem_live_${crypto.randomUUID().slice(0, 8)}`;
    await listModem(redis, { endpointId: dead, country, port: await closedPort() });
    try {
      const cred = await makeCredential(redis);
      const via = () =>
        curl([
          "-x",
          `http://${cred.username(`mbl-${country}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
          "-D",
          "-",
          `http://127.0.0.1:${exit.targets.httpPort}/`,
        ]);
      expect((await via()).stdout).toMatch(/^HTTP\/1\.1 502[\s\S]*E_NO_STOCK: exit unavailable/);
      const reports = (await redis.raw.lrange(keys.tunnelFailures(), 0, 200)).map(
        (j) => JSON.parse(j) as { endpointId: string; reason: string },
      );
      expect(reports.find((f) => f.endpointId === dead)?.reason).toBe("modem_ECONNREFUSED");
      await listModem(redis, { endpointId: live, country, port: exit.modem.port });
      for (let i = 0; i < 5; i++) expect((await via()).stdout).toMatch(/^HTTP\/1\.1 200/);
    } finally {
      await delistEndpoint(redis, dead);
      await delistEndpoint(redis, live);
    }
  });

  it("answers 407 with Proxy-Authenticate, Proxy-Status and X-Request-ID on missing or wrong credentials", async () => {
    const cred = await makeCredential(redis);
    const url = `http://127.0.0.1:${exit.targets.httpPort}/`;
    const none = await curl(["-x", `http://127.0.0.1:${gw.httpPort}`, "-D", "-", url]);
    expect(none.stdout).toMatch(/^HTTP\/1\.1 407/);
    expect(none.stdout).toMatch(/proxy-authenticate: Basic realm="peerproxy"/i);
    expect(none.stdout).toMatch(
      /proxy-status: peerproxy; error=http_request_denied; details="E_AUTH_REQUIRED"/i,
    );
    expect(none.stdout).toMatch(/E_AUTH_REQUIRED: .* \(req: req_\w+\)/);
    const wrong = await curl([
      "-x",
      `http://${cred.username(`mbl-${COUNTRY}`)}:pak_nope@127.0.0.1:${gw.httpPort}`,
      "-D",
      "-",
      url,
    ]);
    expect(wrong.stdout).toMatch(/^HTTP\/1\.1 407/);
    expect(wrong.stdout).toContain("E_AUTH_INVALID");
    // The right secret under another account's label is as wrong as a wrong secret.
    const other = await curl([
      "-x",
      `http://psx_someoneelse-mbl-${COUNTRY}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "-D",
      "-",
      url,
    ]);
    expect(other.stdout).toContain("E_AUTH_INVALID");

    const raw = await rawExchange(
      gw.httpPort,
      `CONNECT 127.0.0.1:${exit.targets.httpPort} HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    expect(raw).toMatch(/^HTTP\/1\.1 407 /);
    expect(raw).toMatch(/Proxy-Authenticate: Basic/);
  });

  it("E_USERNAME_PARSE names the offending token; E_NO_STOCK when nothing is routable", async () => {
    const cred = await makeCredential(redis);
    const via = (rest: string) => [
      "-x",
      `http://${cred.username(rest)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "-D",
      "-",
      `http://127.0.0.1:${exit.targets.httpPort}/`,
    ];
    const bad = await curl(via(`mbl-${COUNTRY}-sid-abcdefgh-rot-sometimes`));
    expect(bad.stdout).toMatch(/^HTTP\/1\.1 400/);
    expect(bad.stdout).toMatch(/E_USERNAME_PARSE: token "rot": .*valid: sticky, hard, auto5/);
    const unknown = await curl(via(`mbl-${COUNTRY}-colour-red`));
    expect(unknown.stdout).toMatch(/E_USERNAME_PARSE: token "colour"/);
    const none = await curl(via("mbl-qz"));
    expect(none.stdout).toMatch(/^HTTP\/1\.1 502/);
    expect(none.stdout).toMatch(/proxy-status: .*details="E_NO_STOCK"/i);
  });

  it("quality contract: an mbl key routes to mbl whatever the username asks; iptype is a hard filter", async () => {
    const mblKey = await makeCredential(redis, { tier: "mbl" });
    const peerKey = await makeCredential(redis, { tier: "peer" });
    const get = (cred: typeof mblKey, rest: string) =>
      curl([
        "-x",
        `http://${cred.username(rest)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
        "-D",
        "-",
        `http://127.0.0.1:${exit.targets.httpPort}/`,
      ]);
    expect((await get(mblKey, `peer-${COUNTRY}`)).stdout).toMatch(/^HTTP\/1\.1 200/);
    expect((await get(mblKey, `any-${COUNTRY}`)).stdout).toMatch(/^HTTP\/1\.1 200/);
    // A peer-tier key never gets the modem, even when it asks for mbl.
    expect((await get(peerKey, `mbl-${COUNTRY}`)).stdout).toContain("E_NO_STOCK");
    expect((await get(mblKey, `mbl-${COUNTRY}-iptype-residential`)).stdout).toContain("E_NO_STOCK");
    expect((await get(mblKey, `mbl-${COUNTRY}-iptype-mobile`)).stdout).toMatch(/^HTTP\/1\.1 200/);
  });

  it("suspended and expired keys are refused with their codes", async () => {
    const off = await makeCredential(redis, { enabled: false });
    const expired = await makeCredential(redis, { expiresAt: Date.now() - 1000 });
    const get = (cred: typeof off) =>
      curl([
        "-x",
        `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
        "-D",
        "-",
        `http://127.0.0.1:${exit.targets.httpPort}/`,
      ]);
    expect((await get(off)).stdout).toMatch(/^HTTP\/1\.1 403[\s\S]*E_CREDENTIAL_SUSPENDED/);
    expect((await get(expired)).stdout).toMatch(
      /^HTTP\/1\.1 403[\s\S]*E_CREDENTIAL_SUSPENDED: credential expired/,
    );
  });

  it("bad input on both ports never crashes the gateway or leaks a hold", async () => {
    const cred = await makeCredential(redis);
    const garbage = [
      [gw.httpPort, "\x00\x01\x02 garbage\r\n\r\n"],
      [gw.httpPort, "CONNECT nonsense HTTP/1.1\r\n\r\n"],
      [gw.socksPort, "\x05\x01\x02\x01\x05"],
      [gw.socksPort, "\x04\x01\x00\x50\x7f\x00\x00\x01\x00"],
      [gw.socksPort, "\x05\x02\x00\x02\x01\xff"],
    ] as const;
    for (const [port, bytes] of garbage) await rawExchange(port, bytes, 300);
    // A client that asks for a tunnel and vanishes the moment it is up.
    const auth = Buffer.from(`${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}`).toString("base64");
    await rawExchange(
      gw.httpPort,
      `CONNECT 127.0.0.1:${exit.targets.httpPort} HTTP/1.1\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`,
      300,
    );
    await waitUntil(async () => gw.ctx.tunnels.size === 0, 10_000, "tunnels closed");
    await waitUntil(
      async () => (await redis.hgetall(keys.endpoint(endpointId))).conns === "0",
      10_000,
      "holds released",
    );
    const ok = await curl([
      "-x",
      `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      `http://127.0.0.1:${exit.targets.httpPort}/`,
    ]);
    expect(ok.stdout).toBe("hello");
  });

  it("serves /health and /metrics on the admin port: setup and select_endpoint histograms, bytes by direction and pool, auth failures, event-loop lag", async () => {
    const health = await fetch(`http://127.0.0.1:${gw.adminPort}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, draining: false });
    const metrics = await (await fetch(`http://127.0.0.1:${gw.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/gateway_tunnels_opened_total [1-9]/);
    expect(metrics).toMatch(/gateway_errors_total\{code="E_AUTH_INVALID"\} [1-9]/);
    expect(metrics).toMatch(/^gateway_auth_failures_total [1-9]/m);
    expect(metrics).toContain("# TYPE gateway_tunnel_setup_seconds histogram");
    expect(metrics).toMatch(/^gateway_tunnel_setup_seconds_count\{pool="mbl",result="ok"\} [1-9]/m);
    expect(metrics).toMatch(/^gateway_select_endpoint_seconds_count\{pool="mbl"\} [1-9]/m);
    expect(metrics).toMatch(/^gateway_bytes_total\{direction="up",pool="mbl"\} [1-9]/m);
    expect(metrics).toMatch(/^gateway_bytes_total\{direction="down",pool="mbl"\} [1-9]/m);
    expect(metrics).toMatch(/^nodejs_eventloop_lag_p99_seconds [\d.e-]+$/m);
  });

  it("refuses loopback and private targets with E_TARGET_BLOCKED unless the development flag is set", async () => {
    const strict = await startGateway(gatewayEnv({ GATEWAY_ALLOW_PRIVATE_TARGETS: "0" }), { redis });
    try {
      const cred = await makeCredential(redis);
      const r = await curl([
        "-x",
        `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${strict.httpPort}`,
        "-D",
        "-",
        `http://127.0.0.1:${exit.targets.httpPort}/`,
      ]);
      expect(r.stdout).toMatch(/^HTTP\/1\.1 403[\s\S]*details="E_TARGET_BLOCKED"/);
    } finally {
      await strict.close();
    }
  });

  it("enforces the key's connection limit with E_RATE_LIMITED and frees the slot when a tunnel ends", async () => {
    const cred = await makeCredential(redis, { maxConnections: 1 });
    const auth = Buffer.from(`${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}`).toString("base64");
    const held = connect(gw.httpPort, "127.0.0.1");
    held.on("error", () => {});
    held.write(
      `CONNECT 127.0.0.1:${exit.targets.httpPort} HTTP/1.1\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`,
    );
    await new Promise((r) => held.once("data", r));
    const via = () =>
      curl([
        "-x",
        `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
        "-D",
        "-",
        `http://127.0.0.1:${exit.targets.httpPort}/`,
      ]);
    expect((await via()).stdout).toMatch(/^HTTP\/1\.1 429[\s\S]*E_RATE_LIMITED: connection limit of 1/);
    held.destroy();
    await waitUntil(async () => gw.ctx.tunnels.size === 0, 5000, "held tunnel closed");
    expect((await via()).stdout).toMatch(/^HTTP\/1\.1 200/);
  });

  it("rate limits failed logins per client address with E_RATE_LIMITED", async () => {
    // Failures count per clock minute: a run that crossed a minute boundary started a fresh count.
    // This gateway's clock starts mid-minute, 30 s from either edge.
    const offset = 30_000 - (Date.now() % 60_000);
    const strict = await startGateway(gatewayEnv({ GATEWAY_AUTH_FAIL_LIMIT: "2" }), {
      redis,
      sharedClock: fixedClock(() => Date.now() + offset),
    });
    try {
      const cred = await makeCredential(redis);
      const attempt = (secret: string) =>
        curl([
          "-x",
          `http://${cred.username(`mbl-${COUNTRY}`)}:${secret}@127.0.0.1:${strict.httpPort}`,
          "-D",
          "-",
          `http://127.0.0.1:${exit.targets.httpPort}/`,
        ]);
      for (let i = 0; i < 3; i++) await attempt("pak_wrong");
      const blocked = await attempt(cred.secret);
      expect(blocked.stdout).toMatch(/^HTTP\/1\.1 429[\s\S]*E_RATE_LIMITED/);
    } finally {
      await strict.close();
    }
  });

  // Last in the file on purpose: the lines checked are those of every test above as well.
  it("logs JSON lines: a customer's X-Request-ID with its keyId and endpointId, and never a pool secret", async () => {
    const cred = await makeCredential(redis);
    const requestId = `req_${crypto.randomUUID().replaceAll("-", "").slice(0, 20)}`;
    const r = await curl([
      "-p",
      "-x",
      `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "--proxy-header",
      `X-Request-ID: ${requestId}`,
      `http://127.0.0.1:${exit.targets.httpPort}/`,
    ]);
    expect(r.stdout).toBe("hello");
    await waitUntil(async () => gwLogs.some((l) => l.includes(requestId)), 5_000, "the tunnel's log line");
    const lines = gwLogs.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.requestId === requestId)).toMatchObject({
      service: "gateway",
      msg: "tunnel closed",
      keyId: cred.keyId,
      endpointId,
      pool: "mbl",
    });
    expect(lines.some((l) => l.msg === "request refused" && l.code === "E_AUTH_INVALID")).toBe(true);
    const all = gwLogs.join("\n");
    expect(all).not.toContain(cred.secret);
    expect(all).not.toMatch(/pak_|psx_|eyJ/);
  });
});

/** Sends raw bytes, collects whatever comes back until the peer closes or waitMs passes. */
function rawExchange(port: number, bytes: string, waitMs = 2000): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    let out = "";
    const done = () => {
      s.destroy();
      resolve(out);
    };
    const timer = setTimeout(done, waitMs);
    s.on("data", (d) => {
      out += d.toString("latin1");
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.write(Buffer.from(bytes, "latin1"));
  });
}
