import { neonConfig, Pool } from "@neondatabase/serverless";

export type { Pool, PoolClient } from "@neondatabase/serverless";

/** The narrow query surface services take, so tests can pass a pool or a transaction client. */
export interface Queryable {
  query<R extends Record<string, unknown> = Record<string, unknown>>(
    text: string,
    params?: unknown[],
  ): Promise<{ rows: R[]; rowCount: number | null }>;
}

let configuredProxy: string | undefined;

/**
 * A Neon Pool. `wsProxy` (dev only) routes the driver's WebSocket through dev/neon-wsproxy.ts to a
 * plain Postgres, e.g. "127.0.0.1:5433/v1"; without it the driver talks to Neon directly.
 */
export function createPool(databaseUrl: string, wsProxy?: string): Pool {
  if (wsProxy && configuredProxy !== wsProxy) {
    configuredProxy = wsProxy;
    neonConfig.wsProxy = (host, port) => `${wsProxy}?address=${host}:${port}`;
    neonConfig.useSecureWebSocket = false;
    neonConfig.pipelineTLS = false;
    neonConfig.pipelineConnect = false;
  }
  const pool = new Pool({ connectionString: databaseUrl, max: 5, connectionTimeoutMillis: 5000 });
  // Without a listener an idle client's dropped socket becomes an uncaught error.
  pool.on("error", () => {});
  return pool;
}

/** Runs fn inside BEGIN/COMMIT on one pooled client; rolls back on any throw. */
export async function withTransaction<T>(pool: Pool, fn: (tx: Queryable) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const out = await fn(client as unknown as Queryable);
    await client.query("COMMIT");
    return out;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}
