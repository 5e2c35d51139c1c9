// Entry point: `node gateway-node/main.ts`. Config comes from the environment (gateway-node/config.ts).
import { ConfigError, processEnv } from "../shared/config.ts";
import { loggerFromEnv } from "../shared/log.ts";
import { checkRedis, tcpRedis } from "../shared/redis.node.ts";
import { loadGatewayConfig } from "./config.ts";
import { startGateway } from "./gateway.ts";

const log = loggerFromEnv("gateway", process.env);
let config: ReturnType<typeof loadGatewayConfig>;
try {
  config = loadGatewayConfig(processEnv());
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  log.fatal({ variables: err.variables }, `gateway: ${err.message}`);
  process.exit(2);
}
const redis = tcpRedis(config.REDIS_URL, { log });
let gateway: Awaited<ReturnType<typeof startGateway>>;
try {
  await checkRedis(redis, config.REDIS_URL);
  gateway = await startGateway(config, { redis, log });
} catch (err) {
  // Redis unreachable (or its certificate untrusted) or a port taken: say which, never a secret.
  log.fatal(`gateway: cannot start: ${(err as Error).message}`);
  await redis.close();
  process.exit(1);
}
log.info({ http: gateway.httpPort, socks: gateway.socksPort, admin: gateway.adminPort }, "gateway ready");

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, "gateway draining");
  await gateway.close();
  await redis.close();
  process.exit(0);
};
process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));
