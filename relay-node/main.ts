// The relay process: `node relay-node/main.ts`. Configuration comes from the environment
// (relay-node/config.ts); the ready line below is what the local stack and tests wait for.
import { ConfigError, processEnv } from "../shared/config.ts";
import { loggerFromEnv } from "../shared/log.ts";
import { checkRedis, tcpRedis } from "../shared/redis.node.ts";
import { loadRelayConfig } from "./config.ts";
import { relayRedis, startRelay } from "./relay.ts";
import { redisRevocationFeed } from "./revocations.ts";

const log = loggerFromEnv("relay", process.env);
let config: ReturnType<typeof loadRelayConfig>;
try {
  config = loadRelayConfig(processEnv());
} catch (err) {
  if (err instanceof ConfigError) {
    log.fatal({ variables: err.variables }, `relay: ${err.message}`);
    process.exit(2);
  }
  throw err;
}

const redis = tcpRedis(config.REDIS_URL, { log });
let relay: Awaited<ReturnType<typeof startRelay>>;
try {
  await checkRedis(redis, config.REDIS_URL);
  relay = await startRelay(config, {
    redis: relayRedis(redis),
    revocations: redisRevocationFeed(redis),
    log,
  });
} catch (err) {
  // Redis unreachable or a port taken: say which, without a stack trace or any secret.
  log.fatal(`relay: cannot start: ${(err as Error).message}`);
  await redis.close();
  process.exit(1);
}
log.info({ relayId: relay.relayId, ws: relay.wsUrl, internal: relay.internalUrl }, "relay ready");

let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, "relay stopping");
  await relay.close();
  await redis.close();
  process.exit(0);
};
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
