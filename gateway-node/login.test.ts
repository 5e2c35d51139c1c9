/**
 * A returning key's CONNECT waits for Redis once: its login, byte lease and endpoint pick go out
 * together (ADR 0033). The pick runs before the login's answer is read, so every way a login can
 * fail after an earlier success is tried here, and each must leave no hold, lease or slot behind.
 */
import { createHash } from "node:crypto";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { fixedClock } from "../shared/clock.ts";
import { keys } from "../shared/keys.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import type { Principal } from "./auth.ts";
import { loadGatewayConfig } from "./config.ts";
import { type Gateway, startGateway } from "./gateway.ts";
import { LoginCache } from "./login.ts";
import {
  type ModemExit,
  makeCredential,
  openConnectTunnel,
  startModemExit,
  type TestCredential,
  testGatewayEnv,
} from "./testing.ts";

const COUNTRY = "qr";
/** what the gateway's Redis is away: every answer waits this long (a Redis in another building) */
const RTT_MS = 80;
const redis = tcpRedis(stateEnv().REDIS_URL);
/**
 * This file's customers connect from an address of their own (Linux routes all of 127/8 to lo):
 * failed logins are counted per address and minute in the shared Redis, and other test files
 * fail logins from 127.0.0.1 meanwhile, past this gateway's limit of 3.
 */
const byte = () => 2 + Math.floor(Math.random() * 250);
const CUSTOMER = `127.${byte()}.${byte()}.${byte()}`;
const endpointId = `modem_${crypto.randomUUID().slice(0, 8)}`;
let far: { port: number; server: Server; sockets: Set<Socket> };
let farRedis: ReturnType<typeof tcpRedis>;
let exit: ModemExit;
let gw: Gateway;

/** A TCP relay to the test Redis that holds each answer RTT_MS before passing it on (order kept). */
async function distantRedis(): Promise<typeof far> {
  const target = new URL(stateEnv().REDIS_URL);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = netConnect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.on("data", (d) => upstream.write(d));
    upstream.on("data", (d) => setTimeout(() => client.destroyed || client.write(d), RTT_MS));
    for (const s of [client, upstream]) {
      s.on("error", () => {});
      s.on("close", () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return { port, server, sockets };
}

beforeAll(async () => {
  exit = await startModemExit(redis, { endpointId, country: COUNTRY });
  far = await distantRedis();
  farRedis = tcpRedis(`redis://127.0.0.1:${far.port}`);
  gw = await startGateway(
    loadGatewayConfig(testGatewayEnv({ GATEWAY_AUTH_FAIL_LIMIT: "3" })),
    // the shared clock is the host's here: its start-up reads of Redis's TIME would cost 3 RTTs
    { redis: farRedis, sharedClock: fixedClock(Date.now) },
  );
});

afterAll(async () => {
  await gw?.close();
  await farRedis?.close();
  for (const s of far?.sockets ?? []) s.destroy();
  far?.server.close();
  await exit?.stop();
  await redis.close();
});

const user = (cred: TestCredential) => ({ username: cred.username(`mbl-${COUNTRY}`), secret: cred.secret });

/** ms from the CONNECT to the gateway's 200; the tunnel is closed and given back before it returns */
async function timedConnect(cred: TestCredential): Promise<number> {
  const started = performance.now();
  const s = await openConnectTunnel(gw.httpPort, user(cred), exit.targets.httpPort, CUSTOMER);
  const ms = performance.now() - started;
  s.destroy();
  await waitUntil(async () => gw.ctx.tunnels.size === 0, 5000, "tunnel given back");
  return ms;
}

/** The gateway's whole refusal of a CONNECT (it must refuse). */
async function refusal(cred: TestCredential): Promise<string> {
  try {
    const s = await openConnectTunnel(gw.httpPort, user(cred), exit.targets.httpPort, CUSTOMER);
    s.destroy();
    return "HTTP/1.1 200 (the gateway let it in)";
  } catch (err) {
    return (err as Error).message;
  }
}

/** Nothing of `cred` is left in Redis but its closed lease entries: no hold, no slot, no budget out. */
async function nothingHeld(cred: TestCredential) {
  // a refused CONNECT gives back in the background of its answer: wait for the last write
  await waitUntil(
    async () => (await redis.raw.zcard(keys.credentialConns(cred.keyId))) === 0,
    5000,
    "the key's holds given back",
  );
  const holds = await redis.raw.zrange(keys.poolHolds(), 0, -1);
  expect(holds.filter((m) => m.endsWith(`|${cred.keyId}`))).toEqual([]);
  expect(await redis.raw.hget(keys.endpoint(endpointId), "conns")).toBe("0");
  await waitUntil(
    async () => Number((await redis.get(keys.credentialLeaseSum(cred.keyId))) ?? 0) === 0,
    5000,
    "the key's leased bytes given back",
  );
}

describe("the gateway's memory of logins", () => {
  const last = { keyId: "pk_a", accountLabel: "Acme", tier: "mbl" } as Principal;
  it("guesses only for a username of the same account, routed by the key's own pool", () => {
    const cache = new LoginCache();
    cache.remember("h1", last);
    expect(cache.guess("h1", "psx_acme-peer-us")?.route.pool).toBe("mbl");
    expect(cache.guess("h1", "psx_other-any-us")).toBeUndefined();
    expect(cache.guess("h1", "psx_acme-nonsense!!")).toBeUndefined();
    expect(cache.guess("h2", "psx_acme-any-us")).toBeUndefined();
    cache.forget("h1");
    expect(cache.guess("h1", "psx_acme-any-us")).toBeUndefined();
  });

  it("keeps at most its size, dropping the login used longest ago", () => {
    const cache = new LoginCache(2);
    cache.remember("h1", last);
    cache.remember("h2", last);
    cache.remember("h1", last); // used again: now the newest
    cache.remember("h3", last);
    expect(cache.size).toBe(2);
    expect(cache.guess("h2", "psx_acme-any-us")).toBeUndefined();
    expect(cache.guess("h1", "psx_acme-any-us")).toBeDefined();
  });
});

/** A SOCKS5 client one step at a time: reads exactly what each step expects. */
async function socksClient() {
  const s = netConnect({ port: gw.socksPort, host: "127.0.0.1", localAddress: CUSTOMER });
  s.on("error", () => {});
  let buf = Buffer.alloc(0);
  let closed = false;
  let wake = () => {};
  s.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    wake();
  });
  s.on("close", () => {
    closed = true;
    wake();
  });
  const read = async (n: number): Promise<Buffer> => {
    while (buf.length < n) {
      if (closed) throw new Error(`closed after ${buf.length} of ${n} bytes`);
      await new Promise<void>((r) => {
        wake = r;
      });
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  await new Promise((r) => s.once("connect", r));
  return {
    s,
    /** greeting and RFC 1929 login: the status byte (0 = accepted) */
    async login(cred: TestCredential): Promise<number> {
      s.write(Buffer.from([5, 1, 2]));
      expect([...(await read(2))]).toEqual([5, 2]);
      const u = Buffer.from(user(cred).username);
      const p = Buffer.from(cred.secret);
      s.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
      return (await read(2))[1]!;
    },
    /** a request for an IPv4 target (cmd 1 CONNECT, 2 BIND): the reply's REP byte */
    async request(ip: number[], port: number, cmd = 1): Promise<number> {
      s.write(Buffer.from([5, cmd, 0, 1, ...ip, port >> 8, port & 255]));
      return (await read(10))[1]!;
    },
  };
}

describe("a returning key's SOCKS5 CONNECT", () => {
  it("is answered without waiting for Redis: the lease and the pick went out with the login", async () => {
    const cred = await makeCredential(redis);
    const timed = async () => {
      const c = await socksClient();
      let t = performance.now();
      expect(await c.login(cred)).toBe(0);
      const login = performance.now() - t;
      t = performance.now();
      expect(await c.request([127, 0, 0, 1], exit.targets.httpPort)).toBe(0);
      const request = performance.now() - t;
      c.s.destroy();
      await waitUntil(async () => gw.ctx.tunnels.size === 0, 5000, "tunnel given back");
      return { login, request };
    };
    const first = await timed();
    // A first login waits for Redis at the login; its lease and pick go out once it is accepted,
    // while the client names its target, which it does at once here.
    expect(first.login).toBeGreaterThanOrEqual(RTT_MS);
    const again: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = await timed();
      expect(t.login).toBeGreaterThanOrEqual(RTT_MS);
      again.push(t.request);
    }
    again.sort((a, b) => a - b);
    // On main the CONNECT waited one round trip for the lease and the pick.
    expect(again[2]).toBeLessThan(RTT_MS / 2);
  });

  it("leaves nothing held when the client leaves after its login, first time or returning", async () => {
    const cred = await makeCredential(redis);
    for (let i = 0; i < 2; i++) {
      const c = await socksClient();
      expect(await c.login(cred)).toBe(0);
      await new Promise((r) => setTimeout(r, 2 * RTT_MS)); // the reservation is taken by now
      expect(await redis.raw.zcard(keys.credentialConns(cred.keyId))).toBe(1);
      c.s.destroy();
      await nothingHeld(cred);
    }
    expect(gw.ctx.metrics.loginGuesses.confirmed).toBeGreaterThan(0);
  });

  it("leaves nothing held for a refused target or command", async () => {
    const cred = await makeCredential(redis);
    for (const [ip, cmd, rep] of [
      [[10, 1, 2, 3], 1, 0x02], // a private target (E_TARGET_BLOCKED)
      [[127, 0, 0, 1], 2, 0x07], // BIND: command not supported
    ] as const) {
      const c = await socksClient();
      expect(await c.login(cred)).toBe(0);
      expect(await c.request([...ip], exit.targets.httpPort, cmd)).toBe(rep);
      c.s.destroy();
      await nothingHeld(cred);
    }
  });

  it("is refused at the CONNECT, with nothing held, once its key was suspended at its cap", async () => {
    const cred = await makeCredential(redis);
    const c = await socksClient();
    expect(await c.login(cred)).toBe(0);
    expect(await c.request([127, 0, 0, 1], exit.targets.httpPort)).toBe(0);
    c.s.destroy();
    await nothingHeld(cred);
    await redis.hset(keys.credential(cred.keyId), { enabled: "0", suspendedReason: "cap" });
    const again = await socksClient();
    expect(await again.login(cred)).toBe(0); // a cap is answered on the CONNECT (RFC 1928 REP)
    expect(await again.request([127, 0, 0, 1], exit.targets.httpPort)).toBe(0x02);
    again.s.destroy();
    await nothingHeld(cred);
    expect(gw.ctx.metrics.loginGuesses.refused).toBeGreaterThan(0);
  });
});

describe("a returning key's CONNECT", () => {
  it("waits for Redis once, where a first login waits twice", async () => {
    const cred = await makeCredential(redis);
    const first = await timedConnect(cred);
    const again: number[] = [];
    for (let i = 0; i < 5; i++) again.push(await timedConnect(cred));
    again.sort((a, b) => a - b);
    const median = again[2]!;
    // Login, then lease and pick: two of Redis's answers in a row before the exit is asked.
    expect(first).toBeGreaterThanOrEqual(2 * RTT_MS);
    // All three in one: one answer, plus the modem's few milliseconds.
    expect(median).toBeGreaterThanOrEqual(RTT_MS);
    expect(median).toBeLessThan(1.5 * RTT_MS);
  });

  it("is refused and leaves nothing held once its key was deleted", async () => {
    const cred = await makeCredential(redis);
    await timedConnect(cred);
    // as the API's cred_delete does: the secret's entry and the key's cached credential go
    const secretKey = keys.credentialSecret(createHash("sha256").update(cred.secret).digest("hex"));
    expect(await redis.raw.del(secretKey, keys.credential(cred.keyId))).toBe(2);
    expect(await refusal(cred)).toMatch(/^HTTP\/1\.1 407[\s\S]*E_AUTH_INVALID/);
    await nothingHeld(cred);
  });

  it("is refused and leaves nothing held once its key was suspended at its cap", async () => {
    const cred = await makeCredential(redis);
    await timedConnect(cred);
    await redis.hset(keys.credential(cred.keyId), { enabled: "0", suspendedReason: "cap" });
    expect(await refusal(cred)).toMatch(/^HTTP\/1\.1 402[\s\S]*E_CAP_EXCEEDED/);
    await nothingHeld(cred);
  });

  it("is refused and leaves nothing held once it expired", async () => {
    const cred = await makeCredential(redis);
    await timedConnect(cred);
    await redis.hset(keys.credential(cred.keyId), { expiresAt: String(Date.now() - 1000) });
    expect(await refusal(cred)).toMatch(/^HTTP\/1\.1 403[\s\S]*E_CREDENTIAL_SUSPENDED/);
    await nothingHeld(cred);
  });

  it("honours a connection limit lowered since its last login", async () => {
    const cred = await makeCredential(redis, { maxConnections: 3 });
    await timedConnect(cred);
    const held = await openConnectTunnel(gw.httpPort, user(cred), exit.targets.httpPort, CUSTOMER);
    try {
      await redis.hset(keys.credential(cred.keyId), { maxConnections: "1" });
      // A pick made with the limit read at the last login (3) would let this one in.
      expect(await refusal(cred)).toMatch(/^HTTP\/1\.1 429[\s\S]*E_RATE_LIMITED/);
      expect(await redis.raw.zcard(keys.credentialConns(cred.keyId))).toBe(1);
    } finally {
      held.destroy();
    }
    await nothingHeld(cred);
    expect(gw.ctx.metrics.loginGuesses.repicked).toBeGreaterThan(0);
  });

  it("is refused for another account's username, however its secret logged in before", async () => {
    const mine = await makeCredential(redis);
    const other = await makeCredential(redis);
    await timedConnect(mine);
    // The remembered secret with the other account's name: no guess, and the login refuses it.
    const crossed = { ...mine, username: other.username };
    expect(await refusal(crossed)).toMatch(/^HTTP\/1\.1 407[\s\S]*E_AUTH_INVALID/);
    await nothingHeld(mine);
    await nothingHeld(other);
  });

  it("never lets concurrent CONNECTs of a returning key past its connection limit", async () => {
    const cred = await makeCredential(redis, { maxConnections: 2 });
    await timedConnect(cred);
    const tries = await Promise.allSettled(
      Array.from({ length: 6 }, () =>
        openConnectTunnel(gw.httpPort, user(cred), exit.targets.httpPort, CUSTOMER),
      ),
    );
    const open = tries.flatMap((t) => (t.status === "fulfilled" ? [t.value] : []));
    const refused = tries.flatMap((t) => (t.status === "rejected" ? [String(t.reason)] : []));
    try {
      expect(open).toHaveLength(2);
      for (const r of refused) expect(r).toMatch(/429[\s\S]*E_RATE_LIMITED/);
      expect(await redis.raw.zcard(keys.credentialConns(cred.keyId))).toBe(2);
    } finally {
      for (const s of open) s.destroy();
    }
    await nothingHeld(cred);
  });

  it("is refused from an address over its failed-login limit, with nothing held", async () => {
    const cred = await makeCredential(redis);
    await timedConnect(cred);
    const wrong = { ...cred, secret: `pak_${"0".repeat(32)}` };
    // (the deleted key above already counted one failure from this address)
    for (let i = 0; i < 3; i++) expect(await refusal(wrong)).toMatch(/^HTTP\/1\.1 (407|429)/);
    expect(await refusal(cred)).toMatch(/^HTTP\/1\.1 429[\s\S]*too many failed logins/);
    await nothingHeld(cred);
  });
});
