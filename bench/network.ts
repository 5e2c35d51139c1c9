// The network the bench measures, started the way `npm start` starts it but on its own Redis and
// Postgres and free ports: the API (wrangler dev, register limits raised by its dev vars), relays
// and gateways (dev/edges.ts), the prober grading exits against an HTTPS target named `localhost`
// (so each simulated device's exit resolves it to its fault shim), a plain HTTP target, and a
// supplier and a customer whose pool key allows the concurrency the figures need.
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type GatewayEdge,
  type RelayEdge,
  relayRegionsSetting,
  startGateways,
  startRelays,
} from "../dev/edges.ts";
import { freePort, type Service, startProcess, waitUntil } from "../dev/proc.ts";
import { redisServerArgs, type StateServices, startStateServices } from "../dev/services.ts";
import { startHttpTarget } from "../dev/targets.ts";
import { startProbeTarget } from "../prober/target.ts";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { type TcpRedis, tcpRedis } from "../shared/redis.node.ts";
import { type Api, startApi, stateVars } from "../test/helpers/api.ts";
import { startShims } from "./fleet/shims.ts";

const root = join(import.meta.dirname, "..");

export interface BenchNetwork {
  dir: string;
  state: StateServices;
  api: Api;
  relays: RelayEdge[];
  gateways: GatewayEdge[];
  prober: Service;
  redis: TcpRedis;
  httpTarget: { port: number; url: string };
  httpsTarget: { port: number };
  supplierKey: string;
  /** the customer's proxy username for `peer-us` (add `-pin-device-<id>` to pin) and its secret */
  customer: { user: string; secret: string };
  /** runs the listing cron once (wrangler dev never fires it by itself) */
  cron(): Promise<void>;
  /** waits until `ids` are all listed for sale (prober verified, cron listed); returns how many are */
  waitListed(ids: string[], timeoutMs: number): Promise<number>;
  /** how many of `ids` are listed for sale now */
  countListed(ids: string[]): Promise<number>;
  /** a further pool key of the bench customer (its own metering): proxy user as `customer.user` */
  mintPoolKey(name: string): Promise<{ keyId: string; user: string; secret: string }>;
  /**
   * SIGKILLs a relay or gateway (the fault figures); the returned `restart` starts it again with the
   * same command and environment, as a supervisor would, and replaces `edge.service`.
   */
  killEdge(edge: RelayEdge | GatewayEdge): Promise<{ restart(): Promise<void> }>;
  /**
   * Restarts Redis on the same port: SHUTDOWN SAVE, `downMs` without a server, then a new
   * redis-server that loads the snapshot (a managed Redis restarting keeps its data).
   */
  restartRedis(downMs: number): Promise<{ stoppedAt: number; startedAt: number }>;
  stop(): Promise<void>;
}

export async function startBenchNetwork(opts: {
  relays: number;
  gateways: number;
  echo?: boolean;
  relayEnv?: Record<string, string>;
  /** extra environment for every gateway (e.g. NODE_OPTIONS=--cpu-prof) */
  gatewayEnv?: Record<string, string>;
}): Promise<BenchNetwork> {
  const dir = mkdtempSync(join(tmpdir(), "peerproxy-bench-"));
  const state = await startStateServices({ dir: join(dir, "state") });
  const env = state.env;
  const redis = tcpRedis(env.REDIS_URL);
  const httpTarget = await startHttpTarget();
  const httpsTarget = await startProbeTarget();
  const caFile = join(dir, "target-ca.pem");
  writeFileSync(caFile, httpsTarget.caPem);
  const shims = await startShims([httpTarget.port, httpsTarget.port]);

  const relayPorts = [];
  for (let i = 0; i < opts.relays; i++) relayPorts.push({ ws: await freePort(), internal: await freePort() });
  const gatewayPorts = [];
  for (let i = 0; i < opts.gateways; i++)
    gatewayPorts.push({ http: await freePort(), socks: await freePort(), admin: await freePort() });
  const [relays, gateways] = await Promise.all([
    startRelays({ env, ports: relayPorts, echo: opts.echo, extraEnv: opts.relayEnv }),
    startGateways({
      env,
      ports: gatewayPorts,
      echo: opts.echo,
      // One machine plays every customer from 127.0.0.1: the per-address handshake bound would
      // otherwise refuse the concurrency figure's customers (production keeps the default).
      extraEnv: { GATEWAY_UNAUTH_PER_IP: "8192", GATEWAY_UNAUTH_TOTAL: "16384", ...opts.gatewayEnv },
    }),
  ]);

  const pool = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
  await pool.query("UPDATE settings SET value = $1 WHERE key = 'relay_regions'", [
    JSON.stringify(relayRegionsSetting(relays)),
  ]);
  const supplier = await createAccountWithKey(pool, { name: "bench supplier", kind: "supplier" });
  const customer = await createAccountWithKey(pool, { name: "bench customer", kind: "customer" });
  await pool.query(
    "UPDATE accounts SET resell_allowance_bytes = $2, resell_max_connections = 10000 WHERE id = $1",
    [customer.accountId, String(2 ** 50)],
  );
  await pool.end();

  const api = await startApi(
    {
      ...stateVars(env),
      // Development vars only (refused in production): the fleet registers from one address.
      RATE_LIMIT_REGISTER_PER_MINUTE: "1000000",
      RATE_LIMIT_REFRESH_PER_MINUTE: "1000000",
      DEV_CLIENT_IP_CLASS: "residential",
      DEV_CLIENT_COUNTRY: "US",
    },
    { tmp: dir, echo: opts.echo },
  );
  // wrangler dev reloads the Worker when a source file changes under it (a developer editing while
  // the bench runs) and answers that request with a plain-text 503: try again.
  const key = await waitUntil(
    async () => {
      const res = await fetch(`${api.url}/v1/reseller/pool-keys`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": customer.apiKey },
        body: JSON.stringify({ name: "bench", tier: "any", capBytes: 2 ** 45, maxConnections: 10_000 }),
      });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`pool key: ${res.status} ${text}`);
      return JSON.parse(text) as { username: string; secret: string };
    },
    30_000,
    "the bench customer's pool key",
  );

  const prober = startProcess("prober", process.execPath, [join(root, "prober", "main.ts")], {
    cwd: root,
    echo: opts.echo,
    env: {
      REDIS_URL: env.REDIS_URL,
      RELAY_SHARED_SECRET: env.RELAY_SHARED_SECRET,
      DATABASE_URL: env.DATABASE_URL,
      NEON_WS_PROXY: env.NEON_WS_PROXY,
      ENVIRONMENT: "development",
      PROBE_TARGET_HOST: "localhost",
      PROBE_TARGET_PORT: String(httpsTarget.port),
      PROBE_TARGET_CA: caFile,
      PROBER_ADMIN_PORT: "0",
      PROBE_ADMIT_INTERVAL_MS: "1000",
      // Admission is what the bench waits for: verified devices are not probed again during a run
      // (the default minute would spend the prober's capacity re-probing the first thousand).
      PROBE_INTERVAL_MS: "900000",
      PROBE_NEW_SPREAD_MS: "5000",
      PROBE_CONCURRENCY: "128",
      PROBE_INITIAL_BYTES: String(32 * 1024),
      PROBE_MAX_BYTES: String(256 * 1024),
      PROBE_STALL_MS: "3000",
      PROBE_OVERALL_TIMEOUT_MS: "10000",
    },
  });
  await prober.waitFor(/prober ready/, 30_000);

  const mintPoolKey = async (name: string) => {
    const res = await fetch(`${api.url}/v1/reseller/pool-keys`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": customer.apiKey },
      body: JSON.stringify({ name, tier: "any", capBytes: 2 ** 45, maxConnections: 10_000 }),
    });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`pool key: ${res.status} ${text}`);
    const minted = JSON.parse(text) as { id: string; username: string; secret: string };
    return {
      keyId: minted.id,
      user: `${minted.username.replace(/-any-any$/, "")}-peer-us`,
      secret: minted.secret,
    };
  };
  let restartedRedis: Service | undefined;

  // wrangler dev never fires the cron, so the bench does, as often as once a second while it waits
  // for listings. Two things made that misleading at 2,000 endpoints:
  // - /__scheduled answers at once and the jobs finish in the background (waitUntil). Fired once a
  //   second, listing runs piled up: a full run showed dozens in flight, each taking 37-107 s (about
  //   4 s alone), and the quality figure read 0 of 25 slow exits listed that a run still in flight
  //   was about to list. So cron() waits for its own listing run's job_runs row.
  // - Each job's runaway cap (maxRunsPerHour: 120 for auto-listing) is sized for one run a minute.
  //   The bench compresses time, so it clears this hour's run counters before each run; the cap
  //   itself is tested in functions/test/scheduled.test.ts.
  const countListed = async (ids: string[]) => {
    let n = 0;
    for (let i = 0; i < ids.length; i += 500) {
      const flags = (await redis.raw.smismember(keys.poolListed(), ...ids.slice(i, i + 500))) as number[];
      n += flags.filter((f) => f === 1).length;
    }
    return n;
  };
  const jobRuns = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
  const cron = async () => {
    const counters = await redis.raw.keys(keys.jobRuns("*", new Date().toISOString().slice(0, 13)));
    if (counters.length) await redis.raw.del(...counters);
    const firedAt = new Date().toISOString();
    const fired = await fetch(`${api.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`).then(
      (r) => r.ok,
      () => false,
    );
    if (!fired) return;
    await waitUntil(
      async () =>
        (
          await jobRuns.query(
            "SELECT 1 FROM job_runs WHERE job = 'auto-listing' AND started_at >= $1 LIMIT 1",
            [firedAt],
          )
        ).rows.length > 0,
      120_000,
      "the listing cron run to finish",
    ).catch(() => {});
  };
  return {
    dir,
    state,
    api,
    relays,
    gateways,
    prober,
    redis,
    httpTarget,
    httpsTarget,
    supplierKey: supplier.apiKey,
    customer: { user: `${key.username.replace(/-any-any$/, "")}-peer-us`, secret: key.secret },
    cron,
    countListed,
    async waitListed(ids, timeoutMs) {
      const listed = () => countListed(ids);
      const deadline = Date.now() + timeoutMs;
      let n = 0;
      await waitUntil(
        async () => {
          await cron();
          n = await listed();
          if (n === ids.length || Date.now() > deadline - 2_000) return true;
          await new Promise((r) => setTimeout(r, 1_000));
          return false;
        },
        timeoutMs,
        "devices listed",
      ).catch(() => {});
      return n;
    },
    mintPoolKey,
    async killEdge(edge) {
      const pid = edge.service.child.pid!;
      const env = Object.fromEntries(
        readFileSync(`/proc/${pid}/environ`, "utf8")
          .split("\0")
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
      );
      const [cmd, ...argv] = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      const name = edge.service.name;
      process.kill(pid, "SIGKILL");
      await edge.service.exited;
      return {
        async restart() {
          edge.service = startProcess(name, cmd!, argv, { cwd, env, echo: opts.echo });
          await edge.service.waitFor(/(relay|gateway) ready/, 30_000);
        },
      };
    },
    async restartRedis(downMs) {
      await redis.raw.call("SHUTDOWN", "SAVE").catch(() => {});
      await waitUntil(async () => !(await canConnect(state.redisPort)), 10_000, "redis-server to stop");
      const stoppedAt = Date.now();
      await new Promise((r) => setTimeout(r, downMs));
      // The arguments dev/services.ts starts it with: same port, same directory (its dump.rdb).
      restartedRedis = startProcess(
        "redis",
        "redis-server",
        redisServerArgs(state.redisPort, join(dir, "state", "redis")),
      );
      await waitUntil(async () => (await redis.ping()) === "PONG", 10_000, "redis-server back");
      return { stoppedAt, startedAt: Date.now() };
    },
    async stop() {
      await prober.stop();
      await Promise.all([...gateways, ...relays].map((s) => s.service.stop()));
      await api.stop();
      await shims.close();
      await httpTarget.stop();
      await httpsTarget.stop();
      await redis.close();
      await jobRuns.end();
      await state.stop();
      await restartedRedis?.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port }, () => {
      sock.destroy();
      resolve(true);
    });
    sock.on("error", () => resolve(false));
  });
}
