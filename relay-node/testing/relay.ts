// Starts a real relay in-process on port 0 for a test file, with its own secrets, against the
// run's Redis, plus helpers to sign peer tokens for unique test devices.

import { randomHex } from "../../shared/ids.ts";
import { PEER_TOKEN_TTL_SECONDS, signJwt } from "../../shared/jwt.ts";
import { memoryLogger } from "../../shared/log.ts";
import { type TcpRedis, tcpRedis } from "../../shared/redis.node.ts";
import { stateEnv } from "../../test/helpers/env.ts";
import { loadRelayConfig } from "../config.ts";
import { type RunningRelay, relayRedis, startRelay } from "../relay.ts";
import { redisRevocationFeed } from "../revocations.ts";

export interface TestRelay {
  relay: RunningRelay;
  redis: TcpRedis;
  jwtSecret: string;
  sharedSecret: string;
  logs: string[];
  /** A fresh device id for this test. */
  newDeviceId(): string;
  token(deviceId: string, claims?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

/** A peer JWT for `deviceId` signed with `jwtSecret`, valid for the usual lifetime; `claims` override any. */
export function peerToken(
  deviceId: string,
  jwtSecret: string,
  claims: Record<string, unknown> = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return signJwt(
    {
      sub: deviceId,
      acct: "acct_test",
      kind: "peer",
      gen: 1,
      iat: now,
      exp: now + PEER_TOKEN_TTL_SECONDS,
      ...claims,
    },
    jwtSecret,
  );
}

/** `deps.now` is the relay host's clock (default Date.now). */
export async function startTestRelay(
  env: Record<string, string> = {},
  deps: { now?: () => number } = {},
): Promise<TestRelay> {
  const jwtSecret = `jwt-${randomHex(16)}`;
  const sharedSecret = `rss-${randomHex(16)}`;
  const config = loadRelayConfig({
    REDIS_URL: stateEnv().REDIS_URL,
    JWT_SECRET: jwtSecret,
    RELAY_SHARED_SECRET: sharedSecret,
    RELAY_PORT: "0",
    RELAY_INTERNAL_PORT: "0",
    RELAY_ID: `relay_test_${randomHex(4)}`,
    DRAIN_TIMEOUT_MS: "500",
    ...env,
  });
  const redis = tcpRedis(config.REDIS_URL);
  const logs: string[] = [];
  const relay = await startRelay(config, {
    redis: relayRedis(redis),
    revocations: redisRevocationFeed(redis),
    log: memoryLogger(logs, "relay"),
    ...(deps.now ? { now: deps.now } : {}),
  });
  return {
    relay,
    redis,
    jwtSecret,
    sharedSecret,
    logs,
    newDeviceId: () => `agent_${randomHex(8)}`,
    token: (deviceId, claims) => peerToken(deviceId, jwtSecret, claims),
    async close() {
      await relay.close();
      await redis.close();
    },
  };
}
