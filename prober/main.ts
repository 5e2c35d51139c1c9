// The prober process: `node prober/main.ts`. Reads its configuration once (failing closed with the
// variable's name), then grades every online device and modem until SIGINT/SIGTERM.
import { processEnv } from "../shared/config.ts";
import { createPool, type Pool } from "../shared/db/pool.ts";
import { checkRedis, tcpRedis } from "../shared/redis.node.ts";
import { startProberAdmin } from "./admin.ts";
import { loadProberConfig } from "./config.ts";
import type { ProbeTargetConfig } from "./probe.ts";
import { proberRedis, startProber } from "./scheduler.ts";
import { type ProbeTarget, startProbeTarget } from "./target.ts";
import { type RunningWatchdog, startWatchdog, watchdogConfigFrom } from "./watchdog.ts";

let config: ReturnType<typeof loadProberConfig>;
try {
  config = loadProberConfig(processEnv());
} catch (err) {
  console.error(`prober: ${(err as Error).message}`);
  process.exit(2);
}

let local: ProbeTarget | undefined;
let target: ProbeTargetConfig;
if (config.PROBE_LOCAL_TARGET === "1") {
  local = await startProbeTarget();
  target = { host: local.host, port: local.port, caPem: local.caPem, pathTemplate: "/bytes/{n}" };
  console.log(`prober: local probe target on https://${local.host}:${local.port}`);
} else {
  target = {
    host: config.PROBE_TARGET_HOST ?? "",
    port: config.PROBE_TARGET_PORT,
    caPem: config.PROBE_TARGET_CA,
    pathTemplate: config.PROBE_TARGET_PATH,
  };
}

const redis = tcpRedis(config.REDIS_URL);
try {
  await checkRedis(redis, config.REDIS_URL);
} catch (err) {
  console.error(`prober: cannot start: ${(err as Error).message}`);
  await redis.close();
  process.exit(1);
}
let pool: Pool | null = null;
if (config.DATABASE_URL) pool = createPool(config.DATABASE_URL, config.NEON_WS_PROXY);
else console.log("prober: DATABASE_URL not set, probe history is off");

const prober = startProber(config, { redis: proberRedis(redis), db: pool, target });

// The fleet watchdog buys through the gateway like a customer; it only records and alerts.
const wd = watchdogConfigFrom(config, target);
let watchdog: RunningWatchdog | undefined;
if (wd.on && pool) {
  watchdog = startWatchdog(wd.config, { db: pool, redis });
  console.log(`prober: watchdog on ${wd.config.proxyUrl} every ${wd.config.intervalMs} ms`);
} else console.log(`prober: watchdog off: ${wd.on ? "DATABASE_URL not set" : wd.reason}`);
let admin: Awaited<ReturnType<typeof startProberAdmin>>;
try {
  admin = await startProberAdmin(
    { host: config.PROBER_ADMIN_HOST, port: config.PROBER_ADMIN_PORT },
    { prober, ping: () => redis.ping() },
  );
} catch (err) {
  console.error(`prober: cannot start the admin port: ${(err as Error).message}`);
  process.exit(1);
}
console.log(`prober ready admin=${admin.port}`);

let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  await admin.close();
  await watchdog?.stop();
  await prober.stop();
  await redis.close();
  await pool?.end().catch(() => {});
  await local?.stop();
  process.exit(0);
};
process.on("SIGINT", () => void shutdown());
process.on("SIGTERM", () => void shutdown());
