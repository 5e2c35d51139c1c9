// Dedicated ports through the real gateway: a credential pinned to a reserved modem (cred:{id}
// endpointId + ep:{id}:reserved) is routed to that modem only, and the modem serves nobody else.
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitUntil } from "../dev/proc.ts";
import { keys } from "../shared/keys.ts";
import { delistEndpoint, releaseEndpoint, reserveEndpoint } from "../shared/pool.ts";
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

// User-assigned ISO codes private to this file: parallel files never share an index.
const COUNTRY = "qs";
const redis = tcpRedis(stateEnv().REDIS_URL);
let exit: ModemExit;
let gw: Gateway;
const uid = () => crypto.randomUUID().slice(0, 8);
const dedicated = `modem_ded_${uid()}`;
const dead = `modem_dead_${uid()}`;

beforeAll(async () => {
  exit = await startModemExit(redis, { endpointId: dedicated, country: COUNTRY });
  await listModem(redis, { endpointId: dead, country: COUNTRY, port: await closedPort() });
  gw = await startGateway(
    loadGatewayConfig(
      testGatewayEnv({
        GATEWAY_FLUSH_MS: "200",
        // Renewed every ~200 ms: a reservation ends other customers' tunnels within a second here.
        GATEWAY_HOLD_LEASE_MS: "600",
      }),
    ),
    { redis },
  );
});

afterAll(async () => {
  await gw?.close();
  await releaseEndpoint(redis, dedicated);
  await exit?.stop();
  await delistEndpoint(redis, dead);
  await redis.close();
});

const proxy = (username: string, secret: string) => `http://${username}:${secret}@127.0.0.1:${gw.httpPort}`;
const conns = async (id: string) => Number((await redis.hgetall(keys.endpoint(id))).conns ?? 0);

/** Opens a CONNECT tunnel through the gateway and keeps it open; resolves once the gateway said 200. */
function openTunnel(username: string, secret: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(gw.httpPort, "127.0.0.1");
    const auth = Buffer.from(`${username}:${secret}`).toString("base64");
    const target = `127.0.0.1:${exit.targets.httpPort}`;
    s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`);
    s.once("data", (d: Buffer) =>
      d.toString("latin1").startsWith("HTTP/1.1 200") ? resolve(s) : reject(new Error(d.toString())),
    );
    s.on("error", reject);
  });
}

describe("dedicated (pinned) credentials through the gateway", () => {
  it("a pinned credential reaches its reserved modem whatever pool, country or sid the username names", async () => {
    const cred = await makeCredential(redis, { tier: "mbl", endpointId: dedicated });
    await reserveEndpoint(redis, dedicated, cred.keyId);
    try {
      for (const rest of [`mbl-${COUNTRY}`, "peer-zz-sid-pinned_check1-rot-auto5", "any-any"]) {
        const r = await curl([
          "-x",
          proxy(cred.username(rest), cred.secret),
          "-w",
          " %{http_code}",
          `http://127.0.0.1:${exit.targets.httpPort}/`,
        ]);
        expect(r.stdout, rest).toBe("hello 200");
      }
    } finally {
      await releaseEndpoint(redis, dedicated, cred.keyId);
    }
  });

  it("while reserved, an ordinary credential for the same country never gets the modem (only the dead exit is left)", async () => {
    const renter = await makeCredential(redis, { tier: "mbl", endpointId: dedicated });
    await reserveEndpoint(redis, dedicated, renter.keyId);
    try {
      const other = await makeCredential(redis, { tier: "mbl" });
      for (let i = 0; i < 6; i++) {
        const r = await curl([
          "-x",
          proxy(other.username(`mbl-${COUNTRY}`), other.secret),
          "-D",
          "-",
          `http://127.0.0.1:${exit.targets.httpPort}/`,
        ]);
        expect(r.stdout).toMatch(/^HTTP\/1\.1 502[\s\S]*E_NO_STOCK/);
      }
      const reports = (await redis.raw.lrange(keys.tunnelFailures(), 0, 500)).map(
        (j) => JSON.parse(j) as { endpointId: string },
      );
      expect(reports.some((f) => f.endpointId === dedicated)).toBe(false);
      expect(reports.some((f) => f.endpointId === dead)).toBe(true);
    } finally {
      await releaseEndpoint(redis, dedicated, renter.keyId);
    }
    // Released: the modem is back in the shared pool.
    const other = await makeCredential(redis, { tier: "mbl" });
    await delistEndpoint(redis, dead);
    try {
      const r = await curl([
        "-x",
        proxy(other.username(`mbl-${COUNTRY}`), other.secret),
        `http://127.0.0.1:${exit.targets.httpPort}/`,
      ]);
      expect(r.stdout).toBe("hello");
    } finally {
      await listModem(redis, { endpointId: dead, country: COUNTRY, port: await closedPort() });
    }
  });

  it("a pinned credential whose reservation ended, or names another key, gets E_NO_STOCK and never another modem", async () => {
    const cred = await makeCredential(redis, { tier: "mbl", endpointId: dedicated });
    const url = `http://127.0.0.1:${exit.targets.httpPort}/`;
    const notReserved = await curl([
      "-x",
      proxy(cred.username(`mbl-${COUNTRY}`), cred.secret),
      "-D",
      "-",
      url,
    ]);
    expect(notReserved.stdout).toMatch(/^HTTP\/1\.1 502[\s\S]*E_NO_STOCK: the dedicated endpoint/);
    const someoneElse = await makeCredential(redis, { tier: "mbl", endpointId: dedicated });
    await reserveEndpoint(redis, dedicated, someoneElse.keyId);
    try {
      const r = await curl(["-x", proxy(cred.username(`mbl-${COUNTRY}`), cred.secret), "-D", "-", url]);
      expect(r.stdout).toMatch(/^HTTP\/1\.1 502[\s\S]*no longer reserved to it/);
    } finally {
      await releaseEndpoint(redis, dedicated, someoneElse.keyId);
    }
  });

  it("reserving a modem ends other customers' live tunnels on it at their next hold renewal", async () => {
    await delistEndpoint(redis, dead); // the shared customer must land on the modem first
    try {
      const shared = await makeCredential(redis, { tier: "mbl" });
      const socket = await openTunnel(shared.username(`mbl-${COUNTRY}`), shared.secret);
      const closed = new Promise<number>((r) => socket.on("close", () => r(Date.now())));
      expect(await conns(dedicated)).toBe(1);
      const renter = await makeCredential(redis, { tier: "mbl", endpointId: dedicated });
      const reservedAt = Date.now();
      await reserveEndpoint(redis, dedicated, renter.keyId);
      try {
        const ms = (await closed) - reservedAt;
        console.log(`shared tunnel closed ${ms} ms after the reservation (lease 600 ms)`);
        expect(ms).toBeLessThan(2000);
        await waitUntil(async () => (await conns(dedicated)) === 0, 3000, "modem capacity back");
        // The renter gets the modem, past the customer cap it would have for shared customers.
        const tunnel = await openTunnel(renter.username(`mbl-${COUNTRY}`), renter.secret);
        tunnel.destroy();
      } finally {
        await releaseEndpoint(redis, dedicated, renter.keyId);
      }
    } finally {
      await listModem(redis, { endpointId: dead, country: COUNTRY, port: await closedPort() });
    }
  });
});
