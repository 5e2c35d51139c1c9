// Entry point: `node gateway-node/main.ts`. Config comes from the environment (gateway-node/config.ts).
import { tcpRedis } from "../shared/redis.node.ts";
import { loadGatewayConfig } from "./config.ts";
import { startGateway } from "./gateway.ts";

const config = loadGatewayConfig(process.env);
const redis = tcpRedis(config.REDIS_URL);
const gateway = await startGateway(config, { redis });
console.log(`gateway ready http=${gateway.httpPort} socks=${gateway.socksPort} admin=${gateway.adminPort}`);

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  console.log(`gateway draining (${signal})`);
  await gateway.close();
  await redis.close();
  process.exit(0);
};
process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));
