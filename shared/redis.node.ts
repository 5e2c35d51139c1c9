import { Redis as IORedis } from "ioredis";
import { type ConnectionLog, ERROR_LOG_WINDOW_MS, errorLimiter, stderrLog } from "./log-core.ts";
import { type RedisClient, timeMs } from "./redis.ts";

export interface TcpRedis extends RedisClient {
  /** The underlying client, for pipelines in long-lived processes; close() ends it. */
  raw: IORedis;
  /** The last connection-level error (TLS, DNS, refused), for start-up messages; null when none. */
  lastError(): Error | null;
  close(): Promise<void>;
}

// TLS verification failures as Node names them: a start-up against them must say "certificate".
const CERT_ERRORS = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
]);

/** The URL as safe to print: scheme, host and port, never the user or password. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.hostname}${u.port ? `:${u.port}` : ""}`;
  } catch {
    return "(unparseable REDIS_URL)";
  }
}

/**
 * One PING before a process starts serving: resolves, or throws an Error whose message says what is
 * wrong (an untrusted TLS certificate, a plain server behind rediss://, refused, unknown host) and
 * where, without the credentials in the URL.
 */
export async function checkRedis(redis: TcpRedis, url: string, timeoutMs = 10_000): Promise<void> {
  const where = redactRedisUrl(url);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("no answer")), timeoutMs);
      }),
    ]);
  } catch (err) {
    const cause = redis.lastError() ?? (err as Error);
    const code = (cause as NodeJS.ErrnoException).code ?? "";
    if (CERT_ERRORS.has(code))
      throw new Error(
        `cannot reach Redis at ${where}: its TLS certificate is not trusted (${code}); the server's CA must be a system CA or be listed in NODE_EXTRA_CA_CERTS`,
      );
    if (/wrong version number|packet length too long|EPROTO/i.test(`${code} ${cause.message}`))
      throw new Error(
        `cannot reach Redis at ${where}: TLS handshake failed (${cause.message}); does the server speak TLS on that port?`,
      );
    if (cause.message === "no answer" && url.startsWith("rediss:"))
      throw new Error(
        `cannot reach Redis at ${where}: no TLS session within ${timeoutMs} ms; does the server speak TLS on that port?`,
      );
    throw new Error(`cannot reach Redis at ${where}: ${code ? `${code} ` : ""}${cause.message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Redis over TCP for long-lived Node processes (Upstash speaks RESP over TLS too: use rediss://). */
export function tcpRedis(url: string, opts: { log?: ConnectionLog } = {}): TcpRedis {
  const r = new IORedis(url, { maxRetriesPerRequest: 2, enableAutoPipelining: true, lazyConnect: false });
  const log = opts.log ?? stderrLog;
  const where = redactRedisUrl(url);
  const limit = errorLimiter(ERROR_LOG_WINDOW_MS);
  // Every connection error is logged (rate limited, without the URL's credentials); the last one
  // is kept so a start-up check can say why (checkRedis).
  let last: Error | null = null;
  let failing = false;
  r.on("error", (err: NodeJS.ErrnoException) => {
    last = err;
    failing = true;
    const code = err.code ?? err.name;
    const pass = limit(code);
    if (pass)
      log.warn(
        { redis: where, code, err: err.message, suppressed: pass.suppressed },
        "redis connection error",
      );
  });
  r.on("ready", () => {
    last = null;
    if (failing) log.info({ redis: where }, "redis connection restored");
    failing = false;
  });
  return {
    raw: r,
    lastError: () => last,
    ping: () => r.ping(),
    time: async () => timeMs(await r.time()),
    get: (key) => r.get(key),
    async set(key, value, opts = {}) {
      const args: (string | number)[] = [key, value];
      if (opts.pxMs !== undefined) args.push("PX", opts.pxMs);
      if (opts.nx) args.push("NX");
      return (await r.call("SET", ...args)) === "OK";
    },
    del: (...keys) => (keys.length ? r.del(...keys) : Promise.resolve(0)),
    incrBy: (key, by) => r.incrby(key, by),
    expire: async (key, seconds) => (await r.expire(key, seconds)) === 1,
    hgetall: (key) => r.hgetall(key),
    hset: (key, fields) => r.hset(key, fields),
    sadd: (key, ...members) => (members.length ? r.sadd(key, ...members) : Promise.resolve(0)),
    spop: (key, count) => r.spop(key, count),
    eval: (script, keys, args) => r.eval(script, keys.length, ...keys, ...args),
    evalsha: (sha, keys, args) => r.evalsha(sha, keys.length, ...keys, ...args),
    scriptLoad: async (script) => String(await r.script("LOAD", script)),
    async close() {
      // QUIT waits in the offline queue while the client is not connected: only send it when ready.
      if (r.status !== "ready") {
        r.disconnect();
        return;
      }
      const quit = r.quit().catch(() => r.disconnect());
      await Promise.race([quit, new Promise((done) => setTimeout(done, 2_000).unref())]);
      r.disconnect();
    },
  };
}
