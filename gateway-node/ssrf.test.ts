// SSRF: no private target reaches any exit (issue 16 item 3). Every form below names a loopback,
// private, link-local, CGNAT, multicast, unspecified or metadata address, or a name for one. Each is
// sent through HTTP forward, CONNECT and SOCKS5 to a modem exit (tinyproxy, which would resolve and
// dial whatever it is given) and to a peer exit (real relay + protocol test peer), and must be refused
// by the gateway itself with E_TARGET_BLOCKED (SOCKS5 REP 0x02) before any exit is asked. A listener
// on the attacked loopback port counts connections: it must see none.
import { type AddressInfo, connect, createServer, isIP, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectPeer, type TestPeer } from "../relay-node/testing/peer.ts";
import { startTestRelay, type TestRelay } from "../relay-node/testing/relay.ts";
import { delistEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { loadGatewayConfig } from "./config.ts";
import { type Gateway, startGateway } from "./gateway.ts";
import {
  curl,
  listPeer,
  type ModemExit,
  makeCredential,
  startModemExit,
  type TestCredential,
  testGatewayEnv,
} from "./testing.ts";

// User-assigned ISO code private to this file: parallel files never share an index.
const COUNTRY = "qt";
const redis = tcpRedis(stateEnv().REDIS_URL);
let relay: TestRelay;
let peer: TestPeer;
let modem: ModemExit;
let gw: Gateway;
let deviceId: string;
let cred: TestCredential;
/** the attacked port: listeners on 127.0.0.1 and ::1 count every connection they get */
let victimPort: number;
let victims: Server[] = [];
let dialed = 0;
const modemId = `modem_ssrf_${crypto.randomUUID().slice(0, 8)}`;

/** Names the fake resolver answers; nothing in this file asks a real DNS server. */
const RESOLVES: Record<string, string[]> = {
  "intranet.example.test": ["10.20.30.40"],
  "rebind.example.test": ["127.0.0.1"],
  "meta.example.test": ["169.254.169.254"],
  "v6loop.example.test": ["::1"],
};

async function listenVictims(): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const v4 = createServer((s) => {
      dialed++;
      s.destroy();
    });
    await new Promise<void>((r) => v4.listen(0, "127.0.0.1", r));
    const port = (v4.address() as AddressInfo).port;
    const v6 = createServer((s) => {
      dialed++;
      s.destroy();
    });
    const ok = await new Promise<boolean>((r) => {
      v6.once("error", () => r(false));
      v6.listen(port, "::1", () => r(true));
    });
    if (ok) {
      victimPort = port;
      victims = [v4, v6];
      return;
    }
    await new Promise((r) => v4.close(r));
  }
  throw new Error("no port free on both 127.0.0.1 and ::1");
}

beforeAll(async () => {
  await listenVictims();
  [relay, modem] = await Promise.all([
    startTestRelay(),
    startModemExit(redis, { endpointId: modemId, country: COUNTRY }),
  ]);
  deviceId = relay.newDeviceId();
  peer = await connectPeer({ url: relay.relay.wsUrl, token: await relay.token(deviceId) });
  await peer.waitFor("connected");
  peer.sendControl("heartbeat");
  await peer.waitFor("heartbeat_ack");
  await listPeer(redis, { deviceId, country: COUNTRY, relayInternal: relay.relay.internalUrl });
  gw = await startGateway(
    loadGatewayConfig(
      testGatewayEnv({ RELAY_SHARED_SECRET: relay.sharedSecret, GATEWAY_ALLOW_PRIVATE_TARGETS: "0" }),
    ),
    {
      redis,
      lookup: async (name: string) => {
        const found = RESOLVES[name];
        if (!found) throw Object.assign(new Error(`ENOTFOUND ${name}`), { code: "ENOTFOUND" });
        return found;
      },
    },
  );
  cred = await makeCredential(redis);
});

afterAll(async () => {
  await gw?.close();
  await delistEndpoint(redis, deviceId);
  peer?.close();
  await relay?.close();
  await modem?.stop();
  await Promise.all(victims.map((s) => new Promise((r) => s.close(r))));
  await redis.close();
});

type Mode = "forward" | "connect" | "socks";
interface Form {
  host: string;
  /** modes that cannot carry this form (a zone id in an absolute URI is not a valid URL) */
  skip?: Mode[];
  /** names only the gateway's resolver knows: checked for modem exits (peers resolve and check themselves) */
  modemOnly?: boolean;
}

const FORMS: Form[] = [
  // IPv4 loopback in every spelling the WHATWG and inet_aton parsers accept
  { host: "127.0.0.1" },
  { host: "127.1" },
  { host: "127.0.1" },
  { host: "2130706433" },
  { host: "0x7f000001" },
  { host: "0x7f.0.0.1" },
  { host: "0177.0.0.1" },
  { host: "017700000001" },
  { host: "127.0.0.1." },
  { host: "127.255.255.254" },
  // names for loopback
  { host: "localhost" },
  { host: "localhost." },
  { host: "LocalHost" },
  { host: "foo.localhost" },
  { host: "metadata.google.internal" },
  // IPv6 loopback and IPv4 inside IPv6
  { host: "::1" },
  { host: "0:0:0:0:0:0:0:1" },
  { host: "0000:0000:0000:0000:0000:0000:0000:0001" },
  { host: "::ffff:127.0.0.1" },
  { host: "::ffff:7f00:1" },
  { host: "0:0:0:0:0:ffff:7f00:1" },
  { host: "::127.0.0.1" },
  { host: "64:ff9b::7f00:1" },
  { host: "2002:7f00:1::1" },
  { host: "fe80::1%25lo", skip: ["forward"] },
  { host: "fe80::1" },
  // unspecified, private, CGNAT, link-local and metadata, multicast, broadcast, unique-local
  { host: "0.0.0.0" },
  { host: "0" },
  { host: "::" },
  { host: "10.0.0.1" },
  { host: "172.16.0.1" },
  { host: "192.168.1.1" },
  { host: "100.64.0.1" },
  { host: "169.254.169.254" },
  { host: "0xa9fea9fe" },
  { host: "fd00:ec2::254" },
  { host: "fc00::1" },
  { host: "224.0.0.1" },
  { host: "ff02::1" },
  { host: "255.255.255.255" },
  { host: "198.18.0.1" },
  // names the gateway resolves (for modems) to private addresses
  { host: "intranet.example.test", modemOnly: true },
  { host: "rebind.example.test", modemOnly: true },
  { host: "meta.example.test", modemOnly: true },
  { host: "v6loop.example.test", modemOnly: true },
];

const bracket = (h: string) => (h.includes(":") ? `[${h}]` : h);

/** Raw request bytes through the HTTP port; resolves with the full answer (status line + body). */
function rawHttp(bytes: string, waitMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(gw.httpPort, "127.0.0.1");
    let out = "";
    const timer = setTimeout(() => s.destroy(), waitMs);
    s.on("data", (d) => {
      out += d.toString("latin1");
      if (/\r\n\r\n[\s\S]*\n$/.test(out)) s.destroy();
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.write(bytes);
  });
}

function ipv6Bytes(h: string): Buffer {
  const url = new URL(`http://[${h}]/`).hostname.slice(1, -1);
  const [head = "", tail = ""] = url.split("::");
  const hs = head ? head.split(":") : [];
  const ts = tail ? tail.split(":") : [];
  const groups = url.includes("::") ? [...hs, ...Array(8 - hs.length - ts.length).fill("0"), ...ts] : hs;
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => {
    b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return b;
}

/** A SOCKS5 CONNECT: IPv4 (atyp 1) and IPv6 (atyp 4) literals as addresses, the rest as names. */
function socksConnect(username: string, password: string, host: string, port: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = connect(gw.socksPort, "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => s.destroy(), 5000);
    s.on("data", (d) => {
      chunks.push(d);
      if (Buffer.concat(chunks).length >= 14) s.destroy();
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    const u = Buffer.from(username);
    const p = Buffer.from(password);
    let addr: Buffer;
    const literal = host.replace(/%.*$/, "");
    if (isIP(host) === 4) addr = Buffer.from([0x01, ...host.split(".").map(Number)]);
    else if (isIP(literal) === 6 && !host.includes("%"))
      addr = Buffer.concat([Buffer.from([0x04]), ipv6Bytes(host)]);
    else addr = Buffer.concat([Buffer.from([0x03, Buffer.byteLength(host)]), Buffer.from(host)]);
    const portBuf = Buffer.alloc(2);
    portBuf.writeUInt16BE(port);
    s.write(
      Buffer.concat([
        Buffer.from([0x05, 0x01, 0x02]),
        Buffer.from([0x01, u.length]),
        u,
        Buffer.from([p.length]),
        p,
        Buffer.from([0x05, 0x01, 0x00]),
        addr,
        portBuf,
      ]),
    );
  });
}

async function sequential<T>(tasks: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = [];
  for (const task of tasks) out.push(await task());
  return out;
}

/** Sends one form through one mode; returns "blocked" when the gateway refused it itself, else what came back. */
async function attempt(pool: "mbl" | "peer", mode: Mode, host: string): Promise<string> {
  const username = cred.username(`${pool}-${COUNTRY}`);
  const auth = Buffer.from(`${username}:${cred.secret}`).toString("base64");
  if (mode === "socks") {
    const r = await socksConnect(username, cred.secret, host, victimPort);
    // greeting answer (2) + auth status (2) + CONNECT reply (10)
    const rep = r[5];
    return r.length >= 6 && rep === 0x02 ? "blocked" : `socks ${r.toString("hex")}`;
  }
  const hostPort = `${bracket(host)}:${victimPort}`;
  const request =
    mode === "connect"
      ? `CONNECT ${hostPort} HTTP/1.1\r\nHost: ${hostPort}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`
      : `GET http://${hostPort}/ HTTP/1.1\r\nHost: ${hostPort}\r\nProxy-Authorization: Basic ${auth}\r\nConnection: close\r\n\r\n`;
  const r = await rawHttp(request);
  // The gateway's own refusal names the rule; an exit's refusal says "the exit refuses this target".
  return /^HTTP\/1\.1 403 [\s\S]*E_TARGET_BLOCKED: (?!the exit)/.test(r)
    ? "blocked"
    : r.split("\r\n")[0] || "(nothing)";
}

describe("SSRF: private targets never reach an exit", () => {
  it(`refuses ${FORMS.length} private target forms through HTTP forward, CONNECT and SOCKS5 to a modem and a peer exit, before any dial`, async () => {
    const failures: string[] = [];
    let tried = 0;
    for (const pool of ["mbl", "peer"] as const) {
      for (const mode of ["forward", "connect", "socks"] as const) {
        const batch = FORMS.filter((f) => !f.skip?.includes(mode) && !(f.modemOnly && pool === "peer"));
        // SOCKS5 one at a time: a SOCKS5 login takes its endpoint slot before the client names the
        // target (ADR 0033), and 40 logins at once would fill the modem's 6 slots, so the names
        // only the gateway's resolver refuses (which need a picked modem) would get E_NO_CAPACITY.
        const results =
          mode === "socks"
            ? await sequential(batch.map((f) => () => attempt(pool, mode, f.host)))
            : await Promise.all(batch.map((f) => attempt(pool, mode, f.host)));
        results.forEach((r, i) => {
          tried++;
          if (r !== "blocked") failures.push(`${pool} ${mode} ${batch[i]?.host}: ${r}`);
        });
      }
    }
    console.log(
      `SSRF table: ${tried} attempts (${FORMS.length} forms), ${failures.length} not refused, victim dialed ${dialed} times`,
    );
    expect(failures).toEqual([]);
    expect(dialed).toBe(0);
    expect(tried).toBeGreaterThanOrEqual(6 * 30);
  });

  it("GATEWAY_TARGET_HOSTS takes host:port: the listed loopback port is reachable, the next port on the same host is not", async () => {
    const allowed = await startGateway(
      loadGatewayConfig(
        testGatewayEnv({
          RELAY_SHARED_SECRET: relay.sharedSecret,
          GATEWAY_ALLOW_PRIVATE_TARGETS: "0",
          GATEWAY_TARGET_HOSTS: `127.0.0.1:${modem.targets.httpPort}`,
        }),
      ),
      { redis },
    );
    try {
      for (const pool of ["mbl", "peer"]) {
        const via = `http://${cred.username(`${pool}-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${allowed.httpPort}`;
        const ok = await curl(["-x", via, `http://127.0.0.1:${modem.targets.httpPort}/`]);
        expect(ok.stdout).toBe("hello");
        const other = await curl(["-x", via, "-D", "-", `http://127.0.0.1:${victimPort}/`]);
        expect(other.stdout).toMatch(/^HTTP\/1\.1 403[\s\S]*E_TARGET_BLOCKED/);
        const mapped = await curl(["-x", via, "-D", "-", `http://[::ffff:127.0.0.1]:${victimPort}/`]);
        expect(mapped.stdout).toMatch(/^HTTP\/1\.1 403[\s\S]*E_TARGET_BLOCKED/);
      }
      expect(dialed).toBe(0);
    } finally {
      await allowed.close();
    }
  });

  it("a modem is sent the address the gateway resolved and checked, not the name", async () => {
    const asked: string[] = [];
    const dev = await startGateway(
      loadGatewayConfig(testGatewayEnv({ RELAY_SHARED_SECRET: relay.sharedSecret })),
      {
        redis,
        // A name whose first answer is private and second loopback (allowed by the development flag).
        lookup: async (name: string) => {
          asked.push(name);
          return name === "svc.example.test" ? ["10.9.9.9", "127.0.0.1"] : [];
        },
      },
    );
    try {
      const via = `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${dev.httpPort}`;
      // Through a proxy curl resolves nothing itself: the gateway gets the name in the absolute URI.
      const r = await curl(["-x", via, `http://svc.example.test:${modem.targets.httpPort}/`]);
      expect(r.stdout).toBe("hello");
      expect(asked).toEqual(["svc.example.test"]);
    } finally {
      await dev.close();
    }
  });
});
