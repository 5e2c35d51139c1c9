import { createHash, randomBytes } from "node:crypto";
import { request } from "node:http";
import { join } from "node:path";
import { freePort, type Service, startProcess, waitUntil } from "../../dev/proc.ts";
import type { StateEnv } from "../../dev/services.ts";
import { startHttpTarget } from "../../dev/targets.ts";
import { createAccountWithKey } from "../../shared/accounts.ts";
import { createPool, type Pool } from "../../shared/db/pool.ts";
import { keys } from "../../shared/keys.ts";
import { type TcpRedis, tcpRedis } from "../../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "./api.ts";

const root = join(import.meta.dirname, "..", "..");

/**
 * The supply path as it runs for real, for peer binaries under test: the API (wrangler dev) with
 * its devices placed in `country`, the relay, the gateway and the prober as their own processes,
 * a loopback HTTP target, a supplier key for peers and a customer pool key whose username asks
 * for `peer-<country>`. A country no other test uses keeps the pool to the caller's own devices
 * even for requests that do not pin one with `pin-device-<deviceId>`.
 */
export interface SupplyNetwork {
  api: Api;
  pool: Pool;
  redis: TcpRedis;
  relayUrl: string;
  target: { url: string };
  supplier: { apiKey: string; accountId: string };
  /** The relay process; undefined after stopRelay(). */
  relay(): Service | undefined;
  /** The relay's environment (ports, secrets), for a caller that runs its own relay in-process. */
  relayEnv: Record<string, string>;
  /** SIGKILL (or stop) the relay and start a new one on the same ports. */
  restartRelay(signal?: NodeJS.Signals): Promise<void>;
  stopRelay(signal?: NodeJS.Signals): Promise<void>;
  /** Waits until the prober verified the device and the cron listed it. */
  waitListed(deviceId: string, timeoutMs?: number): Promise<void>;
  /**
   * GET through the gateway's HTTP proxy as the customer; status, size and SHA-256 of the body.
   * `pinDevice` adds `-pin-device-<deviceId>` to the username (PROTOCOL.md section 3).
   */
  proxiedGet(
    url: string,
    opts?: { pinDevice?: string },
  ): Promise<{ status: number; bytes: number; sha256: string; text: string }>;
  stop(): Promise<void>;
}

export async function startSupplyNetwork(
  e: StateEnv & { PEERPROXY_TEST_TMP: string },
  opts: { country: string; echo?: boolean },
): Promise<SupplyNetwork> {
  const ports = { relay: 0, relayInternal: 0, gwHttp: 0, gwSocks: 0, gwAdmin: 0 };
  for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
  const redis = tcpRedis(e.REDIS_URL);
  const pool = createPool(e.DATABASE_URL, e.NEON_WS_PROXY);
  const target = await startHttpTarget();
  const tag = randomBytes(4).toString("hex");
  const [api, supplier, customer] = await Promise.all([
    startApi(
      {
        ...stateVars(e),
        // Every local client shares one address: keep other files' calls from limiting ours.
        RATE_LIMIT_REGISTER_PER_MINUTE: "100000",
        RATE_LIMIT_REFRESH_PER_MINUTE: "100000",
        DEV_CLIENT_IP_CLASS: "residential",
        DEV_CLIENT_COUNTRY: opts.country.toUpperCase(),
      },
      { tmp: e.PEERPROXY_TEST_TMP, echo: opts.echo },
    ),
    createAccountWithKey(pool, { name: `supply-net-supplier-${tag}`, kind: "supplier" }),
    createAccountWithKey(pool, { name: `supply-net-customer-${tag}`, kind: "customer" }),
  ]);
  await pool.query("UPDATE accounts SET resell_allowance_bytes = $2 WHERE id = $1", [
    customer.accountId,
    String(100 * 1024 ** 3),
  ]);
  const res = await fetch(`${api.url}/v1/reseller/pool-keys`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": customer.apiKey },
    body: JSON.stringify({ name: "supply network", tier: "any", capBytes: 50 * 1024 ** 3 }),
  });
  const key = (await res.json()) as { username: string; secret: string };
  if (res.status !== 201) throw new Error(`pool key: ${res.status} ${JSON.stringify(key)}`);
  const proxyUser = `${key.username.replace(/-any-any$/, "")}-peer-${opts.country.toLowerCase()}`;

  const relayEnv = {
    REDIS_URL: e.REDIS_URL,
    JWT_SECRET: e.JWT_SECRET,
    RELAY_SHARED_SECRET: e.RELAY_SHARED_SECRET,
    RELAY_PORT: String(ports.relay),
    RELAY_INTERNAL_PORT: String(ports.relayInternal),
    RELAY_ID: `relay_${tag}`,
    DRAIN_TIMEOUT_MS: "300",
  };
  const startRelay = async () => {
    const svc = startProcess("relay", process.execPath, [join(root, "relay-node", "main.ts")], {
      cwd: root,
      echo: opts.echo,
      env: relayEnv,
    });
    await svc.waitFor(/relay ready/, 20_000);
    return svc;
  };
  let relay: Service | undefined = await startRelay();
  const gateway = startProcess("gateway", process.execPath, [join(root, "gateway-node", "main.ts")], {
    cwd: root,
    echo: opts.echo,
    env: {
      GATEWAY_ID: `gw_${tag}`,
      GATEWAY_HTTP_PORT: String(ports.gwHttp),
      GATEWAY_SOCKS_PORT: String(ports.gwSocks),
      GATEWAY_ADMIN_PORT: String(ports.gwAdmin),
      REDIS_URL: e.REDIS_URL,
      RELAY_SHARED_SECRET: e.RELAY_SHARED_SECRET,
      // Development only: the targets are on loopback.
      ENVIRONMENT: "development",
      GATEWAY_ALLOW_PRIVATE_TARGETS: "1",
    },
  });
  const prober = startProcess("prober", process.execPath, [join(root, "prober", "main.ts")], {
    cwd: root,
    echo: opts.echo,
    env: {
      REDIS_URL: e.REDIS_URL,
      RELAY_SHARED_SECRET: e.RELAY_SHARED_SECRET,
      DATABASE_URL: e.DATABASE_URL,
      NEON_WS_PROXY: e.NEON_WS_PROXY,
      ENVIRONMENT: "development",
      PROBE_LOCAL_TARGET: "1",
      PROBER_ADMIN_PORT: "0",
      PROBE_ADMIT_INTERVAL_MS: "1000",
    },
  });
  await gateway.waitFor(/gateway ready/, 30_000);
  await prober.waitFor(/prober ready/, 30_000);

  return {
    api,
    pool,
    redis,
    relayUrl: `ws://127.0.0.1:${ports.relay}`,
    target,
    supplier: { apiKey: supplier.apiKey, accountId: supplier.accountId },
    relay: () => relay,
    relayEnv,
    async restartRelay(signal = "SIGKILL") {
      await relay?.stop(signal);
      relay = await startRelay();
    },
    async stopRelay(signal = "SIGTERM") {
      await relay?.stop(signal);
      relay = undefined;
    },
    async waitListed(deviceId, timeoutMs = 60_000) {
      await waitUntil(
        async () => (await redis.hgetall(keys.probe(deviceId))).verified === "1",
        timeoutMs,
        `the prober to verify ${deviceId}`,
      );
      const cron = `${api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`;
      await waitUntil(
        async () => {
          await fetch(cron);
          return (await redis.raw.sismember(keys.poolListed(), deviceId)) === 1;
        },
        30_000,
        `the cron to list ${deviceId}`,
      );
    },
    proxiedGet(url, { pinDevice } = {}) {
      const user = pinDevice ? `${proxyUser}-pin-device-${pinDevice}` : proxyUser;
      const auth = Buffer.from(`${user}:${key.secret}`).toString("base64");
      return new Promise((resolve, reject) => {
        const req = request(
          {
            host: "127.0.0.1",
            port: ports.gwHttp,
            method: "GET",
            path: url,
            headers: { "proxy-authorization": `Basic ${auth}` },
          },
          (res) => {
            const hash = createHash("sha256");
            let bytes = 0;
            let text = "";
            res.on("data", (d: Buffer) => {
              hash.update(d);
              bytes += d.length;
              if (text.length < 300) text += d.toString("utf8", 0, Math.min(d.length, 300));
            });
            res.on("end", () =>
              resolve({ status: res.statusCode ?? 0, bytes, sha256: hash.digest("hex"), text }),
            );
            res.on("error", reject);
          },
        );
        req.setTimeout(120_000, () => req.destroy(new Error("proxied GET timed out")));
        req.on("error", reject);
        req.end();
      });
    },
    async stop() {
      await prober.stop();
      await gateway.stop();
      await relay?.stop();
      await api.stop();
      await target.stop();
      await pool.end();
      await redis.close();
    },
  };
}
