// The prober process: `node prober/main.ts`. Reads its configuration once (failing closed with the
// variable's name), then grades every online device and modem until SIGINT/SIGTERM.
import { startSharedClock } from "../shared/clock.ts";
import { processEnv } from "../shared/config.ts";
import { createPool, type Pool } from "../shared/db/pool.ts";
import { loggerFromEnv } from "../shared/log.ts";
import { checkRedis, tcpRedis } from "../shared/redis.node.ts";
import { startProberAdmin } from "./admin.ts";
import { loadProberConfig } from "./config.ts";
import type { ProbeTargetConfig } from "./probe.ts";
import { proberRedis, startProber } from "./scheduler.ts";
import { type ProbeTarget, startProbeTarget } from "./target.ts";
import { type RunningWatchdog, startWatchdog, watchdogConfigFrom } from "./watchdog.ts";

const log = loggerFromEnv("prober", process.env);
let config: ReturnType<typeof loadProberConfig>;
try {
  config = loadProberConfig(processEnv());
} catch (err) {
  log.fatal(`prober: ${(err as Error).message}`);
  process.exit(2);
}

let local: ProbeTarget | undefined;
let target: ProbeTargetConfig;
if (config.PROBE_LOCAL_TARGET === "1") {
  local = await startProbeTarget();
  target = { host: local.host, port: local.port, caPem: local.caPem, pathTemplate: "/bytes/{n}" };
  log.info({ target: `https://${local.host}:${local.port}` }, "local probe target");
} else {
  target = {
    host: config.PROBE_TARGET_HOST ?? "",
    port: config.PROBE_TARGET_PORT,
    caPem: config.PROBE_TARGET_CA,
    pathTemplate: config.PROBE_TARGET_PATH,
  };
}

const redis = tcpRedis(config.REDIS_URL, { log });
try {
  await checkRedis(redis, config.REDIS_URL);
} catch (err) {
  log.fatal(`prober: cannot start: ${(err as Error).message}`);
  await redis.close();
  process.exit(1);
}
let pool: Pool | null = null;
if (config.DATABASE_URL) pool = createPool(config.DATABASE_URL, config.NEON_WS_PROXY, { log });
else log.warn("DATABASE_URL not set, probe history is off");

// Probe deadlines and presence scores are Redis's clock, whatever this host's says (shared/clock.ts).
const clock = await startSharedClock({ serverTime: () => redis.time(), log });
const prober = startProber(config, { redis: proberRedis(redis), db: pool, target, log, now: clock.now });

// The fleet watchdog buys through the gateway like a customer; it only records and alerts.
const wd = watchdogConfigFrom(config, target);
let watchdog: RunningWatchdog | undefined;
if (wd.on && pool) {
  watchdog = startWatchdog(wd.config, { db: pool, redis, log, metrics: prober.metrics });
  log.info({ proxy: wd.config.proxyUrl, intervalMs: wd.config.intervalMs }, "watchdog on");
} else log.info({ reason: wd.on ? "DATABASE_URL not set" : wd.reason }, "watchdog off");
let admin: Awaited<ReturnType<typeof startProberAdmin>>;
try {
  admin = await startProberAdmin(
    { host: config.PROBER_ADMIN_HOST, port: config.PROBER_ADMIN_PORT },
    { prober, ping: () => redis.ping() },
  );
} catch (err) {
  log.fatal(`prober: cannot start the admin port: ${(err as Error).message}`);
  process.exit(1);
}
log.info({ admin: admin.port }, "prober ready");

let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  await admin.close();
  await watchdog?.stop();
  await prober.stop();
  clock.stop();
  await redis.close();
  await pool?.end().catch(() => {});
  await local?.stop();
  process.exit(0);
};
process.on("SIGINT", () => void shutdown());
process.on("SIGTERM", () => void shutdown());
