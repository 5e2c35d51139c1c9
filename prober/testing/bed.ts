// One test bed per prober test file: a real relay on a Redis of the file's own, the HTTPS probe
// target, Postgres, and a tenant prefix so the file's probers see only the file's own devices.
// Its own Redis: in the run's shared one, other files' gateways push tunnel failure reports into
// the list the breaker reads and their API cron delists what these tests list.
import { waitUntil } from "../../dev/proc.ts";
import { startTestRelay, type TestRelay } from "../../relay-node/testing/relay.ts";
import { createPool, type Pool } from "../../shared/db/pool.ts";
import { randomHex } from "../../shared/ids.ts";
import { keys } from "../../shared/keys.ts";
import { memoryLogger } from "../../shared/log.ts";
import { ownRedis, stateEnv } from "../../test/helpers/env.ts";
import { loadProberConfig, type ProberConfig } from "../config.ts";
import { type ProberDeps, proberRedis, type RunningProber, startProber } from "../scheduler.ts";
import { type ProbeTarget, startProbeTarget } from "../target.ts";
import { type FaultPeer, type PeerFault, startFaultPeer } from "./fault-peer.ts";

export interface ProberBed {
  relay: TestRelay;
  /** the bed's own Redis, which the relay and its probers use */
  redisUrl: string;
  target: ProbeTarget;
  db: Pool;
  /** device ids of this file start with it, and its probers serve only it */
  tenant: string;
  /**
   * A prober for the tenant that ticks every 100 ms and discovers every 200 ms; `env` overrides
   * those and any other setting, `deps` the relay's Redis, this bed's Postgres and the target.
   * Its log lines go to `logs`. Stopped by close() unless stopped before.
   */
  startProber(
    env?: Record<string, string>,
    deps?: Partial<ProberDeps>,
  ): { prober: RunningProber; config: ProberConfig; logs: string[] };
  /** A device of the tenant online on the relay (its presence written), its exit behaving as `fault`. */
  onlinePeer(
    fault?: PeerFault,
    opts?: { stallAfterBytes?: number },
  ): Promise<{ peer: FaultPeer; deviceId: string }>;
  close(): Promise<void>;
}

export async function startProberBed(): Promise<ProberBed> {
  const redisServer = await ownRedis("prober-bed");
  const env = { ...stateEnv(), REDIS_URL: redisServer.url };
  const relay = await startTestRelay({ PRESENCE_REFRESH_MS: "1000", REDIS_URL: env.REDIS_URL });
  const target = await startProbeTarget();
  const db = createPool(env.DATABASE_URL, env.NEON_WS_PROXY);
  const tenant = `agent_${randomHex(5)}`;
  const probers: RunningProber[] = [];
  const peers: FaultPeer[] = [];
  return {
    relay,
    redisUrl: env.REDIS_URL,
    target,
    db,
    tenant,
    startProber(over = {}, deps = {}) {
      const config = loadProberConfig({
        REDIS_URL: env.REDIS_URL,
        RELAY_SHARED_SECRET: relay.sharedSecret,
        PROBE_TARGET_HOST: target.host,
        PROBE_TARGET_PORT: String(target.port),
        PROBE_TARGET_CA: target.caPem,
        PROBE_ENDPOINT_PREFIX: tenant,
        PROBE_TICK_MS: "100",
        PROBE_DISCOVER_MS: "200",
        PROBE_NEW_SPREAD_MS: "50",
        ...over,
      });
      const logs: string[] = [];
      const prober = startProber(config, {
        redis: proberRedis(relay.redis),
        db,
        target: {
          host: target.host,
          port: target.port,
          caPem: target.caPem,
          pathTemplate: config.PROBE_TARGET_PATH,
        },
        log: memoryLogger(logs, "prober"),
        // Keys of its own: another file engaging the real kill switch (the /admin page test does)
        // or pausing the prober loop must not stall this file's probers.
        killSwitchKey: `ops:kill_switch:test:${randomHex(4)}`,
        pauseKey: `ops:paused:test:${randomHex(4)}`,
        ...deps,
      });
      probers.push(prober);
      return { prober, config, logs };
    },
    async onlinePeer(fault = "good", opts = {}) {
      const deviceId = `${tenant}${randomHex(3)}`;
      const peer = await startFaultPeer({
        url: relay.relay.wsUrl,
        token: await relay.token(deviceId),
        fault,
        ...opts,
      });
      peers.push(peer);
      await waitUntil(
        async () => (await relay.redis.hgetall(keys.presence(deviceId))).relayInternal,
        5_000,
        "presence",
      );
      return { peer, deviceId };
    },
    async close() {
      await Promise.all(probers.map((p) => p.stop()));
      await Promise.all(peers.map((p) => p.close()));
      await relay.close();
      await target.stop();
      await db.end();
      await redisServer.stop();
    },
  };
}
