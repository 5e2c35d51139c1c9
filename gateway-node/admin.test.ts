// The admin port (/health, /metrics) binds to loopback by default, separately from the customer
// ports (issue 16 item 8): opening the customer ports to the world does not open the admin port.
import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import { tcpRedis } from "../shared/redis.node.ts";
import { stateEnv } from "../test/helpers/env.ts";
import { loadGatewayConfig } from "./config.ts";
import { startGateway } from "./gateway.ts";
import { testGatewayEnv } from "./testing.ts";

const reachable = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, host);
    s.on("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });

describe("admin port", () => {
  it("defaults to 127.0.0.1 whatever GATEWAY_HOST says", () => {
    expect(loadGatewayConfig(testGatewayEnv({ GATEWAY_HOST: "0.0.0.0" })).GATEWAY_ADMIN_HOST).toBe(
      "127.0.0.1",
    );
  });

  it("customer ports on another address leave /health on loopback only", async () => {
    const redis = tcpRedis(stateEnv().REDIS_URL);
    // 127.0.0.2 stands in for the public interface (Linux routes all of 127/8 to lo).
    const gw = await startGateway(loadGatewayConfig(testGatewayEnv({ GATEWAY_HOST: "127.0.0.2" })), {
      redis,
    });
    try {
      expect(await reachable("127.0.0.2", gw.httpPort)).toBe(true);
      expect(await reachable("127.0.0.2", gw.socksPort)).toBe(true);
      expect(await reachable("127.0.0.2", gw.adminPort)).toBe(false);
      const health = await fetch(`http://127.0.0.1:${gw.adminPort}/health`);
      expect(health.status).toBe(200);
    } finally {
      await gw.close();
      await redis.close();
    }
  });
});
