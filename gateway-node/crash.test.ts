import type { Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProcess, waitUntil } from "../dev/proc.ts";
import { keys } from "../shared/keys.ts";
import { selectEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import {
  type ModemExit,
  makeCredential,
  openConnectTunnel,
  startModemExit,
  testGatewayEnv,
} from "./testing.ts";

const COUNTRY = "qp";
const LEASE_MS = 1500;
const redis = tcpRedis(stateEnv().REDIS_URL);
let exit: ModemExit;
const endpointId = `modem_${crypto.randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  exit = await startModemExit(redis, { endpointId, country: COUNTRY });
});
afterAll(async () => {
  await exit?.stop();
  await redis.close();
});

async function startGatewayProcess() {
  const gw = startProcess("gateway", process.execPath, [join(import.meta.dirname, "main.ts")], {
    env: testGatewayEnv({ GATEWAY_HOLD_LEASE_MS: String(LEASE_MS) }),
  });
  const m = await gw.waitFor(/"http":(\d+),"socks":(\d+),"admin":(\d+),"msg":"gateway ready"/, 20_000);
  return { gw, httpPort: Number(m[1]), adminPort: Number(m[3]) };
}

/** A CONNECT tunnel to the modem's HTTP target, held open by the test. */
const openTunnel = (port: number, username: string, secret: string) =>
  openConnectTunnel(port, { username, secret }, exit.targets.httpPort);

function get(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    s.once("data", (d) => resolve(d.toString()));
    s.write("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  });
}

const conns = async () => Number((await redis.hgetall(keys.endpoint(endpointId))).conns ?? -1);
/** Runs a pool script that takes nothing (a selection in an empty country): it sweeps lapsed holds. */
const sweepHolds = () =>
  selectEndpoint(redis, {
    keyId: "pk_sweeper",
    pool: "mbl",
    country: "zz",
    maxConnections: 0,
    now: Date.now(),
    leaseMs: 1000,
  });

describe("gateway process lifecycle", () => {
  it("a gateway killed mid-tunnel frees the endpoint's capacity within the hold lease", async () => {
    const { gw, httpPort } = await startGatewayProcess();
    const cred = await makeCredential(redis);
    const tunnel = await openTunnel(httpPort, cred.username(`mbl-${COUNTRY}`), cred.secret);
    expect(await get(tunnel)).toContain("hello");
    expect(await conns()).toBe(1);
    await gw.stop("SIGKILL");
    const killedAt = Date.now();
    expect(await conns()).toBe(1);
    // The hold's lease runs from the dead gateway's last renewal, so it lapses within one lease of
    // the kill whatever moment the kill hit.
    const holds = (await redis.raw.zrange(keys.poolHolds(), 0, -1, "WITHSCORES")) as string[];
    const at = holds.findIndex((m) => m.includes(`|${endpointId}|`));
    const lapsesAfter = Number(holds[at + 1]) - killedAt;
    expect(lapsesAfter).toBeLessThanOrEqual(LEASE_MS);
    // Nobody renews the hold now; any later pool script sweeps it once the lease has passed.
    await waitUntil(
      async () => {
        await sweepHolds();
        return (await conns()) === 0;
      },
      LEASE_MS + 3000,
      "hold swept",
    );
    const freedAfter = Date.now() - killedAt;
    console.log(
      `capacity freed ${freedAfter} ms after SIGKILL: the hold lapsed at +${lapsesAfter} ms (lease ${LEASE_MS} ms), the rest is this test's polling`,
    );
    expect(freedAfter).toBeLessThanOrEqual(LEASE_MS + 500);
    tunnel.destroy();
  });

  it("a live gateway keeps renewing its holds past the lease", async () => {
    const { gw, httpPort } = await startGatewayProcess();
    try {
      const cred = await makeCredential(redis);
      const tunnel = await openTunnel(httpPort, cred.username(`mbl-${COUNTRY}`), cred.secret);
      await new Promise((r) => setTimeout(r, LEASE_MS * 2));
      await sweepHolds();
      expect(await conns()).toBe(1);
      expect(await get(tunnel)).toContain("hello");
      tunnel.destroy();
      await waitUntil(async () => (await conns()) === 0, 5000, "released on close");
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("SIGTERM drains: health turns 503, live tunnels finish, then the process exits 0", async () => {
    const { gw, httpPort, adminPort } = await startGatewayProcess();
    const cred = await makeCredential(redis);
    const tunnel = await openTunnel(httpPort, cred.username(`mbl-${COUNTRY}`), cred.secret);
    gw.child.kill("SIGTERM");
    await gw.waitFor(/gateway draining/);
    expect((await fetch(`http://127.0.0.1:${adminPort}/health`)).status).toBe(503);
    await expect(openTunnel(httpPort, cred.username(`mbl-${COUNTRY}`), cred.secret)).rejects.toThrow();
    expect(await get(tunnel)).toContain("hello");
    tunnel.end();
    const code = await Promise.race([
      gw.exited,
      new Promise((r) => setTimeout(() => r("still running"), 10_000)),
    ]);
    if (code !== 0) console.log(gw.output());
    expect(code).toBe(0);
    expect(await conns()).toBe(0);
  });
});
