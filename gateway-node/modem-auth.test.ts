// Modem exits carry their upstream credentials (issue 16 item 3): the API stores them sealed, the
// gateway opens them with MODEM_UPSTREAM_KEY and sends Proxy-Authorization, so a modem does not rely
// on network isolation alone. The stand-in modem (tinyproxy with BasicAuth) refuses anyone else.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { delistEndpoint, listEndpoint } from "../shared/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { sealUpstreamAuth } from "../shared/upstream-auth.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { loadGatewayConfig } from "./config.ts";
import { startGateway } from "./gateway.ts";
import {
  curl,
  type Modem,
  makeCredential,
  startTargets,
  startTinyproxy,
  type Targets,
  testGatewayEnv,
} from "./testing.ts";

const COUNTRY = "qy";
const KEY = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
const auth = { username: "modemop", password: `pw${crypto.randomUUID().replaceAll("-", "")}` };
const redis = tcpRedis(stateEnv().REDIS_URL);
let modem: Modem;
let targets: Targets;
const endpointId = `modem_auth_${crypto.randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  [modem, targets] = await Promise.all([startTinyproxy({ basicAuth: auth }), startTargets()]);
  await listEndpoint(redis, {
    endpointId,
    pool: "mbl",
    kind: "modem",
    country: COUNTRY,
    ipType: "mobile",
    speedTier: "fast",
    host: "127.0.0.1",
    port: modem.port,
    upstreamAuth: await sealUpstreamAuth(KEY, auth),
  });
});

afterAll(async () => {
  await delistEndpoint(redis, endpointId);
  await Promise.all([modem?.stop(), targets?.stop()]);
  await redis.close();
});

async function through(env: Record<string, string>) {
  const gw = await startGateway(loadGatewayConfig(testGatewayEnv({ GATEWAY_DRAIN_MS: "200", ...env })), {
    redis,
  });
  try {
    const cred = await makeCredential(redis);
    return await curl([
      "-x",
      `http://${cred.username(`mbl-${COUNTRY}`)}:${cred.secret}@127.0.0.1:${gw.httpPort}`,
      "-D",
      "-",
      `http://127.0.0.1:${targets.httpPort}/`,
    ]);
  } finally {
    await gw.close();
  }
}

describe("modem upstream credentials", () => {
  it("the gateway opens the sealed credentials and the modem lets the tunnel through", async () => {
    const r = await through({ MODEM_UPSTREAM_KEY: KEY });
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200[\s\S]*hello$/);
  });

  it("without the key (or with another) the gateway does not dial the modem blind", async () => {
    const envs: Record<string, string>[] = [
      {},
      { MODEM_UPSTREAM_KEY: Buffer.alloc(32, 7).toString("base64") },
    ];
    for (const env of envs) {
      const r = await through(env);
      expect(r.stdout).toMatch(
        /^HTTP\/1\.1 502[\s\S]*E_NO_STOCK: exit unavailable \(modem credentials cannot be opened/,
      );
    }
  });

  it("the modem refuses a CONNECT without its credentials (407), so isolation is not the only guard", async () => {
    const r = await curl([
      "-p",
      "-x",
      `http://127.0.0.1:${modem.port}`,
      "-D",
      "-",
      `http://127.0.0.1:${targets.httpPort}/`,
    ]);
    expect(r.stdout).toMatch(/^HTTP\/1\.[01] 407/);
  });
});
