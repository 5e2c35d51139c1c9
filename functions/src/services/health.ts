import type { Deps } from "../deps.ts";

interface CheckResult {
  ok: boolean;
  latencyMs: number;
  error?: string;
}

const TIMEOUT_MS = 3000;

async function timed(fn: () => Promise<unknown>): Promise<CheckResult> {
  const start = Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
      }),
    ]);
    return { ok: true, latencyMs: Date.now() - start };
  } catch (err) {
    // Connection strings never appear here: only the error's message, trimmed.
    return {
      ok: false,
      latencyMs: Date.now() - start,
      error: String((err as Error)?.message ?? err).slice(0, 200),
    };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/** Really talks to Redis and Postgres; "ok" only if both answered. */
export async function checkHealth(deps: Pick<Deps, "redis" | "db">) {
  const [redis, postgres] = await Promise.all([
    timed(async () => {
      const pong = await deps.redis.ping();
      if (pong !== "PONG") throw new Error(`unexpected PING reply ${pong}`);
    }),
    timed(() => deps.db.query("SELECT 1")),
  ]);
  return {
    status: redis.ok && postgres.ok ? ("ok" as const) : ("degraded" as const),
    checks: { redis, postgres },
  };
}
