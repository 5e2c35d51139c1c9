// `npm start`: the whole network on one machine. Starts Redis, Postgres and the dev stand-ins,
// the API in workerd (wrangler dev), the relay, the gateway, demo peers and local targets; seeds
// a demo account; writes .local/stack.json; prints one `ready` line. Ctrl-C stops everything.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createAccountWithKey } from "../shared/accounts.ts";
import { createPool } from "../shared/db/pool.ts";
import { keys } from "../shared/keys.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { startProbeTarget } from "../prober/target.ts";
import { startHttpTarget } from "./targets.ts";
import { killAllNow, type Service, startProcess, stopAll, waitUntil } from "./proc.ts";
import { startStateServices } from "./services.ts";

const root = join(import.meta.dirname, "..");
// STACK_DIR lets tests run a second stack beside a developer's own; default .local/ (gitignored).
const localDir = process.env.STACK_DIR ?? join(root, ".local");
const port = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const ports = {
  api: port("API_PORT", 8787),
  relay: port("RELAY_PORT", 8080),
  relayInternal: port("RELAY_INTERNAL_PORT", 8081),
  gatewayHttp: port("GATEWAY_HTTP_PORT", 7000),
  gatewaySocks: port("GATEWAY_SOCKS_PORT", 7001),
  gatewayAdmin: port("GATEWAY_ADMIN_PORT", 7002),
};
const echo = process.env.STACK_VERBOSE === "1";
const log = (msg: string) => console.log(`[stack] ${msg}`);

let stopping = false;
const stopState: (() => Promise<void>)[] = [];
async function shutdown(code: number) {
  if (stopping) return;
  stopping = true;
  log("stopping...");
  await stopAll();
  for (const s of stopState.reverse()) await s().catch(() => {});
  log("stopped");
  process.exit(code);
}
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));
process.on("exit", killAllNow);

async function startApi(vars: Record<string, string>): Promise<Service> {
  const persist = join(localDir, "wrangler");
  const args = ["dev", "--local", "--ip", "127.0.0.1", "--port", String(ports.api), "--persist-to", persist];
  args.push("--show-interactive-dev-session=false", "--test-scheduled");
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
  const api = startProcess("api", join(root, "node_modules/.bin/wrangler"), args, {
    cwd: root,
    echo,
    env: { WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_LOG_PATH: persist, NO_COLOR: "1" },
  });
  await waitUntil(
    async () => {
      if (api.child.exitCode !== null) throw new Error(`wrangler dev exited:\n${api.output().slice(-2000)}`);
      return (await fetch(`http://127.0.0.1:${ports.api}/health`).catch(() => undefined))?.ok;
    },
    90_000,
    `the API on :${ports.api}`,
  );
  return api;
}

async function main() {
  mkdirSync(localDir, { recursive: true });
  const t0 = Date.now();
  const state = await startStateServices({ dir: join(localDir, "state"), databaseUrl: process.env.DATABASE_URL });
  stopState.push(state.stop);
  const env = state.env;
  log(`redis ${env.REDIS_URL}, postgres ready, stand-ins up`);

  // Seed: the demo supplier/customer account and the relay region pointing at the local relay.
  const pool = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
  const demo = await createAccountWithKey(pool, { name: "demo", kind: "customer", id: "acct_demo" });
  const relayUrl = `ws://127.0.0.1:${ports.relay}`;
  await pool.query("UPDATE settings SET value = $1 WHERE key = 'relay_regions'", [
    JSON.stringify({ default: "local", regions: { local: { relayUrl, countries: [] } } }),
  ]);
  await pool.end();

  const apiVars = {
    ENVIRONMENT: "development",
    DATABASE_URL: env.DATABASE_URL,
    NEON_WS_PROXY: env.NEON_WS_PROXY,
    UPSTASH_REDIS_REST_URL: env.UPSTASH_REDIS_REST_URL,
    UPSTASH_REDIS_REST_TOKEN: env.UPSTASH_REDIS_REST_TOKEN,
    JWT_SECRET: env.JWT_SECRET,
    DEV_CLIENT_IP_CLASS: "residential",
    DEV_CLIENT_COUNTRY: "US",
  };
  await startApi(apiVars);
  const apiUrl = `http://127.0.0.1:${ports.api}`;
  log(`api ${apiUrl}`);

  // The cron never fires by itself under wrangler dev: drive it every minute like Cloudflare would.
  const cron = async () => {
    await fetch(`${apiUrl}/__scheduled?cron=${encodeURIComponent("* * * * *")}`).catch(() => {});
  };
  await cron();
  setInterval(cron, 60_000).unref();

  // Local targets: what demo traffic and probes reach (loopback only).
  const httpTarget = await startHttpTarget();
  stopState.push(httpTarget.stop);
  const httpsTarget = await startProbeTarget();
  stopState.push(httpsTarget.stop);
  const caFile = join(localDir, "target-ca.pem");
  writeFileSync(caFile, httpsTarget.caPem);

  // The relay, as it runs in production: its own process.
  const relayEnv = {
    RELAY_ID: "relay_local",
    RELAY_PORT: String(ports.relay),
    RELAY_INTERNAL_PORT: String(ports.relayInternal),
    JWT_SECRET: env.JWT_SECRET,
    RELAY_SHARED_SECRET: env.RELAY_SHARED_SECRET,
    REDIS_URL: env.REDIS_URL,
    RELAY_REGION: "local",
  };
  const relay = startProcess("relay", process.execPath, ["relay-node/main.ts"], { cwd: root, echo, env: relayEnv });
  await relay.waitFor(/relay ready/, 30_000);
  log(`relay ${relayUrl} (internal http://127.0.0.1:${ports.relayInternal})`);

  // Two demo peers: the real SDK CLI, allowed to reach loopback targets (development flag).
  const redis = tcpRedis(env.REDIS_URL);
  stopState.push(() => redis.close());
  const peers: { name: string; deviceId: string; stateFile: string }[] = [];
  mkdirSync(join(localDir, "peers"), { recursive: true });
  for (const name of ["demo-peer-1", "demo-peer-2"]) {
    const stateFile = join(localDir, "peers", `${name}.json`);
    const peer = startProcess(name, process.execPath, ["peer-node/src/cli.ts"], {
      cwd: root,
      echo,
      env: {
        API_KEY: demo.apiKey,
        AGENT_NAME: name,
        PEER_API_URL: apiUrl,
        PEER_STATE_FILE: stateFile,
        PEER_ALLOW_PRIVATE_TARGETS: "true",
        COUNTRY: "US",
        VERBOSE: "true",
      },
    });
    const m = await peer.waitFor(/\[REGISTERED\] device=(agent_[0-9a-f]{16})/, 30_000);
    await peer.waitFor(/\[ACK\]/, 30_000);
    peers.push({ name, deviceId: m[1]!, stateFile });
  }
  await waitUntil(
    async () => {
      for (const p of peers) if (!(await redis.hgetall(keys.presence(p.deviceId))).relayId) return false;
      return true;
    },
    15_000,
    "demo peers online in Redis",
  );
  log(`peers ${peers.map((p) => `${p.name}=${p.deviceId}`).join(", ")}`);

  const stack: Record<string, unknown> = {
    startedAt: new Date().toISOString(),
    api: { url: apiUrl, health: `${apiUrl}/health`, openapi: `${apiUrl}/openapi.json` },
    redis: { url: env.REDIS_URL, restUrl: env.UPSTASH_REDIS_REST_URL },
    postgres: { url: env.DATABASE_URL.replace(/:[^:@/]+@/, ":***@"), wsProxy: env.NEON_WS_PROXY },
    relay: { url: relayUrl, internalUrl: `http://127.0.0.1:${ports.relayInternal}`, metrics: `http://127.0.0.1:${ports.relayInternal}/metrics` },
    peers,
    targets: { http: httpTarget.url, https: `https://127.0.0.1:${httpsTarget.port}`, caFile },
    demo: { accountId: demo.accountId, apiKey: demo.apiKey },
    secrets: { jwtSecret: "(generated per run)", relaySharedSecret: "(generated per run)" },
  };
  writeFileSync(join(localDir, "stack.json"), `${JSON.stringify(stack, null, 2)}\n`);
  console.log(`ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: api ${apiUrl} (see .local/stack.json; Ctrl-C stops everything)`);
}

main().catch(async (err) => {
  console.error(`[stack] failed: ${(err as Error).stack ?? err}`);
  await shutdown(1);
});
