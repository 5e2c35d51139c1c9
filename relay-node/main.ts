// The relay process: `node relay-node/main.ts`. Configuration comes from the environment
// (relay-node/config.ts); the ready line below is what the local stack and tests wait for.
import { ConfigError, processEnv } from "../shared/config.ts";
import { checkRedis, tcpRedis } from "../shared/redis.node.ts";
import { loadRelayConfig } from "./config.ts";
import { relayRedis, startRelay } from "./relay.ts";
import { redisRevocationFeed } from "./revocations.ts";

let config: ReturnType<typeof loadRelayConfig>;
try {
  config = loadRelayConfig(processEnv());
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`relay: ${err.message}`);
    process.exit(2);
  }
  throw err;
}

const redis = tcpRedis(config.REDIS_URL);
let relay: Awaited<ReturnType<typeof startRelay>>;
try {
  await checkRedis(redis, config.REDIS_URL);
  relay = await startRelay(config, { redis: relayRedis(redis), revocations: redisRevocationFeed(redis) });
} catch (err) {
  // Redis unreachable or a port taken: say which, without a stack trace or any secret.
  console.error(`relay: cannot start: ${(err as Error).message}`);
  await redis.close();
  process.exit(1);
}
console.log(`relay ready id=${relay.relayId} ws=${relay.wsUrl} internal=${relay.internalUrl}`);

let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  console.log(`relay stopping signal=${signal}`);
  await relay.close();
  await redis.close();
  process.exit(0);
};
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
