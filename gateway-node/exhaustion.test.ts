// Exhaustion (issue 16 item 7): slow handshakes are cut on both customer ports, unauthenticated
// connections are capped per source address, a cheap key cannot hold the pool, and a busy pool
// answers 503 E_NO_CAPACITY with Retry-After rather than 502 E_NO_STOCK.
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { loadGatewayConfig } from "./config.ts";
import { startGateway } from "./gateway.ts";
import { listModem, type ModemExit, makeCredential, startModemExit, testGatewayEnv } from "./testing.ts";

// User-assigned ISO code private to this file: parallel files never share an index.
const COUNTRY = "qu";
const redis = tcpRedis(stateEnv().REDIS_URL);
let exit: ModemExit;
const uid = () => crypto.randomUUID().slice(0, 8);
const modemIds = [`modem_ex_${uid()}`, `modem_ex_${uid()}`, `modem_ex_${uid()}`];
const open: Socket[] = [];

beforeAll(async () => {
  // One tinyproxy listed three times: a pool of three modem exits, 6 connections and 3 customers each.
  exit = await startModemExit(redis, { endpointId: modemIds[0] ?? "", country: COUNTRY });
  for (const id of modemIds.slice(1))
    await listModem(redis, { endpointId: id, country: COUNTRY, port: exit.modem.port });
});

afterAll(async () => {
  for (const s of open) s.destroy();
  for (const id of modemIds.slice(1)) await delistEndpoint(redis, id);
  await exit?.stop();
  await redis.close();
});

/** Opens a connection that sends `bytes` one byte every `everyMs`; resolves when the gateway closes it. */
function trickle(port: number, bytes: Buffer, everyMs: number): { closedAfter: Promise<number> } {
  const started = Date.now();
  const s = connect(port, "127.0.0.1");
  open.push(s);
  s.on("error", () => {});
  // Read (and drop) what the gateway answers, or a paused socket never sees the gateway's FIN.
  s.resume();
  let i = 0;
  const timer = setInterval(() => {
    if (i < bytes.length && !s.destroyed) s.write(bytes.subarray(i, ++i));
  }, everyMs);
  s.write(bytes.subarray(0, ++i));
  return {
    closedAfter: new Promise((resolve) =>
      s.on("close", () => {
        clearInterval(timer);
        resolve(Date.now() - started);
      }),
    ),
  };
}

function connectRequest(
  port: number,
  target: string,
  auth: string,
): Promise<{ head: string; socket: Socket }> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    open.push(s);
    s.on("error", () => {});
    let out = "";
    s.on("data", (d) => {
      out += d.toString("latin1");
      if (out.includes("\r\n\r\n")) resolve({ head: out, socket: s });
    });
    s.on("close", () => resolve({ head: out, socket: s }));
    s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`);
  });
}

describe("slow handshakes", () => {
  it("20 SOCKS5 and 20 HTTP connections trickling one handshake byte every 3 s are all cut within 15 s (default deadline)", async () => {
    const gw = await startGateway(loadGatewayConfig(testGatewayEnv({ GATEWAY_DRAIN_MS: "500" })), { redis });
    try {
      const socksHello = Buffer.from([
        0x05,
        0x01,
        0x02,
        0x01,
        0x20,
        ...Buffer.from("psx_slow-any-any").subarray(0),
      ]);
      const httpHello = Buffer.from("CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Slow: 1\r\n");
      const conns = [
        ...Array.from({ length: 20 }, () => trickle(gw.socksPort, socksHello, 3000)),
        ...Array.from({ length: 20 }, () => trickle(gw.httpPort, httpHello, 3000)),
      ];
      const closed = await Promise.race([
        Promise.all(conns.map((c) => c.closedAfter)),
        new Promise<null>((r) => setTimeout(() => r(null), 16_000)),
      ]);
      expect(closed, "some slow handshakes were still open after 16 s").not.toBeNull();
      const worst = Math.max(...(closed ?? []));
      const socksWorst = Math.max(...(closed ?? []).slice(0, 20));
      console.log(`slow handshakes: 40 cut, slowest after ${worst} ms (SOCKS5 ${socksWorst} ms)`);
      expect(worst).toBeLessThan(15_000);
    } finally {
      await gw.close();
    }
  }, 30_000);

  it("unauthenticated connections are capped per source address; an authenticated tunnel does not count", async () => {
    const gw = await startGateway(
      loadGatewayConfig(
        testGatewayEnv({
          GATEWAY_UNAUTH_PER_IP: "5",
          GATEWAY_HANDSHAKE_TIMEOUT_MS: "4000",
          GATEWAY_DRAIN_MS: "500",
        }),
      ),
      { redis },
    );
    try {
      const cred = await makeCredential(redis);
      const auth = Buffer.from(`${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}`).toString("base64");
      const tunnel = await connectRequest(gw.httpPort, `127.0.0.1:${exit.targets.httpPort}`, auth);
      expect(tunnel.head).toMatch(/^HTTP\/1\.1 200/);
      const idle = Array.from({ length: 5 }, (_, i) =>
        i % 2
          ? trickle(gw.httpPort, Buffer.from("C"), 60_000)
          : trickle(gw.socksPort, Buffer.from([0x05]), 60_000),
      );
      await new Promise((r) => setTimeout(r, 200));
      const extra = trickle(gw.httpPort, Buffer.from("C"), 60_000);
      const extraClosed = await Promise.race([
        extra.closedAfter,
        new Promise<null>((r) => setTimeout(() => r(null), 1500)),
      ]);
      expect(
        extraClosed,
        "the 6th unauthenticated connection from one address was not refused",
      ).not.toBeNull();
      for (const c of idle) expect(await c.closedAfter).toBeLessThan(6000);
      expect(tunnel.socket.destroyed).toBe(false);
    } finally {
      await gw.close();
    }
  }, 20_000);
});

describe("unauthenticated total", () => {
  it("the gateway-wide cap on unauthenticated connections refuses the next one on either port", async () => {
    const gw = await startGateway(
      loadGatewayConfig(
        testGatewayEnv({ GATEWAY_UNAUTH_PER_IP: "100", GATEWAY_UNAUTH_TOTAL: "3", GATEWAY_DRAIN_MS: "500" }),
      ),
      { redis },
    );
    try {
      trickle(gw.httpPort, Buffer.from("C"), 60_000);
      trickle(gw.socksPort, Buffer.from([0x05]), 60_000);
      trickle(gw.httpPort, Buffer.from("C"), 60_000);
      await new Promise((r) => setTimeout(r, 200));
      for (const port of [gw.socksPort, gw.httpPort]) {
        const extra = trickle(port, Buffer.from("C"), 60_000);
        const closed = await Promise.race([
          extra.closedAfter,
          new Promise<null>((r) => setTimeout(() => r(null), 1500)),
        ]);
        expect(closed, `port ${port}: a 4th unauthenticated connection was not refused`).not.toBeNull();
      }
      expect(gw.ctx.handshakes.open).toBe(3);
    } finally {
      for (const s of open) s.destroy();
      await gw.close();
    }
  });
});

describe("busy pool", () => {
  it("50 concurrent CONNECTs on a 3-modem pool: those that do not fit get 503 E_NO_CAPACITY with Retry-After; an empty country is 502 E_NO_STOCK", async () => {
    const gw = await startGateway(loadGatewayConfig(testGatewayEnv({ GATEWAY_DRAIN_MS: "500" })), { redis });
    try {
      const creds = await Promise.all(Array.from({ length: 10 }, () => makeCredential(redis)));
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => {
          const cred = creds[i % creds.length];
          if (!cred) throw new Error("no credential");
          const auth = Buffer.from(`${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}`).toString("base64");
          return connectRequest(gw.httpPort, `127.0.0.1:${exit.targets.httpPort}`, auth);
        }),
      );
      const statuses = results.map((r) => r.head.split(" ")[1]);
      const ok = statuses.filter((s) => s === "200").length;
      const busy = results.filter((r) =>
        /^HTTP\/1\.1 503[\s\S]*Retry-After: \d+[\s\S]*E_NO_CAPACITY/i.test(r.head),
      );
      console.log(
        `50 CONNECTs on 3 modems: ${ok} x 200, ${busy.length} x 503 E_NO_CAPACITY, others ${50 - ok - busy.length}`,
      );
      expect(ok).toBeGreaterThan(0);
      expect(ok + busy.length).toBe(50);
      for (const r of results) r.socket.destroy();
      await waitUntil(async () => gw.ctx.tunnels.size === 0, 5000, "tunnels closed");

      const cred = creds[0];
      if (!cred) throw new Error("no credential");
      const auth = Buffer.from(`${cred.username("mbl-qv")}:${cred.secret}`).toString("base64");
      const empty = await connectRequest(gw.httpPort, `127.0.0.1:${exit.targets.httpPort}`, auth);
      expect(empty.head).toMatch(/^HTTP\/1\.1 502[\s\S]*E_NO_STOCK/);
    } finally {
      await gw.close();
    }
  }, 30_000);

  it("a key's holds are bounded by the bytes it has left: a key with 2 MiB left holds at most 2 tunnels at 1 MiB per hold", async () => {
    const gw = await startGateway(
      loadGatewayConfig(testGatewayEnv({ GATEWAY_HOLD_BYTES: String(1024 * 1024), GATEWAY_DRAIN_MS: "500" })),
      {
        redis,
      },
    );
    try {
      const cred = await makeCredential(redis, { capBytes: 2 * 1024 * 1024 });
      const auth = Buffer.from(`${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}`).toString("base64");
      const results = [];
      for (let i = 0; i < 4; i++)
        results.push(await connectRequest(gw.httpPort, `127.0.0.1:${exit.targets.httpPort}`, auth));
      const ok = results.filter((r) => r.head.startsWith("HTTP/1.1 200")).length;
      console.log(`holds of a 2 MiB key: ${ok} of 4`);
      expect(ok).toBe(2);
      expect(results[2]?.head).toMatch(/^HTTP\/1\.1 429[\s\S]*E_RATE_LIMITED/);
      for (const r of results) r.socket.destroy();
    } finally {
      await gw.close();
    }
  });

  it("an idle tunnel gives its hold back after GATEWAY_IDLE_TIMEOUT_MS", async () => {
    const gw = await startGateway(
      loadGatewayConfig(
        testGatewayEnv({
          GATEWAY_IDLE_TIMEOUT_MS: "1000",
          GATEWAY_HOLD_LEASE_MS: "600",
          GATEWAY_DRAIN_MS: "500",
        }),
      ),
      { redis },
    );
    try {
      const cred = await makeCredential(redis);
      const auth = Buffer.from(`${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}`).toString("base64");
      const started = Date.now();
      const t = await connectRequest(gw.httpPort, `127.0.0.1:${exit.targets.httpPort}`, auth);
      expect(t.head).toMatch(/^HTTP\/1\.1 200/);
      const closed = await new Promise<number>((r) => t.socket.on("close", () => r(Date.now() - started)));
      await waitUntil(async () => gw.ctx.tunnels.size === 0, 2000, "tunnel released");
      console.log(`idle tunnel closed after ${closed} ms (timeout 1000 ms, checked every 200 ms)`);
      expect(closed).toBeLessThan(2500);
    } finally {
      await gw.close();
    }
  });
});
