import { neonConfig, Pool } from "@neondatabase/serverless";
import { type ConnectionLog, ERROR_LOG_WINDOW_MS, errorLimiter, stderrLog } from "../log-core.ts";

export type { Pool, PoolClient } from "@neondatabase/serverless";

/** The narrow query surface services take, so tests can pass a pool or a transaction client. */
export interface Queryable {
  query<R extends Record<string, unknown> = Record<string, unknown>>(
    text: string,
    params?: unknown[],
  ): Promise<{ rows: R[]; rowCount: number | null }>;
}

let configuredProxy: string | undefined;
/** One limiter for every pool of the process (the Worker makes a pool per request). */
const limit = errorLimiter(ERROR_LOG_WINDOW_MS);

/**
 * A Neon Pool. `wsProxy` (dev only) routes the driver's WebSocket through dev/neon-wsproxy.ts to a
 * plain Postgres, e.g. "127.0.0.1:5433/v1"; without it the driver talks to Neon directly.
 */
export function createPool(databaseUrl: string, wsProxy?: string, opts: { log?: ConnectionLog } = {}): Pool {
  if (wsProxy && configuredProxy !== wsProxy) {
    configuredProxy = wsProxy;
    neonConfig.wsProxy = (host, port) => `${wsProxy}?address=${host}:${port}`;
    neonConfig.useSecureWebSocket = false;
    neonConfig.pipelineTLS = false;
    neonConfig.pipelineConnect = false;
  }
  const pool = new Pool({ connectionString: databaseUrl, max: 5, connectionTimeoutMillis: 5000 });
  // Without a listener an idle client's dropped socket becomes an uncaught error. Logged (host
  // only, rate limited), never swallowed: a Postgres outage must show in the process's log.
  // Errors after end() are the driver noticing its own sockets close (workerd says "Network
  // connection lost" on every end()): not an outage.
  const log = opts.log ?? stderrLog;
  const where = safeHost(databaseUrl);
  let ended = false;
  const end = pool.end.bind(pool);
  pool.end = ((...args: Parameters<Pool["end"]>) => {
    ended = true;
    return end(...args);
  }) as Pool["end"];
  pool.on("error", (err: Error & { code?: string }) => {
    if (ended) return;
    const code = err.code ?? err.name;
    const pass = limit(code);
    if (pass)
      log.warn(
        { postgres: where, code, err: err.message, suppressed: pass.suppressed },
        "postgres connection error",
      );
  });
  return pool;
}

/** host:port of a connection string, never its user or password. */
function safeHost(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}${u.port ? `:${u.port}` : ""}`;
  } catch {
    return "(unparseable DATABASE_URL)";
  }
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

/**
 * SQLSTATEs that say Postgres cannot take this request now, not that the request is wrong: too
 * many connections (53300, also per role), starting up or shutting down (57P03), and the
 * connection-exception class (08). A burst of clients past the connection limit gets these.
 */
const UNAVAILABLE_STATES = new Set(["53300", "57P03"]);

/** True when `err` is Postgres (or the way to it) being unavailable for now: worth a retry. */
export function isDatabaseUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return false;
  return UNAVAILABLE_STATES.has(code) || code.startsWith("08");
}
