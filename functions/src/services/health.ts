import type { Deps } from "../deps.ts";

/** What a failed check says in public: a stable word, never the driver's text (addresses, users). */
export type CheckError = "timeout" | "unreachable" | "unexpected_reply";

interface CheckResult {
  ok: boolean;
  latencyMs: number;
  error?: CheckError;
}

const TIMEOUT_MS = 3000;

class Timeout extends Error {}
class UnexpectedReply extends Error {}

async function timed(name: string, fn: () => Promise<unknown>): Promise<CheckResult> {
  const start = Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Timeout(`no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
      }),
    ]);
    return { ok: true, latencyMs: Date.now() - start };
  } catch (err) {
    // The cause goes to the log for operators (credentials in URLs masked), not to the caller.
    const message = String((err as Error)?.message ?? err)
      .replace(/\/\/[^/@\s]*@/g, "//***@")
      .slice(0, 200);
    console.error(
      JSON.stringify({ level: "error", msg: "health check failed", check: name, error: message }),
    );
    const error: CheckError =
      err instanceof Timeout
        ? "timeout"
        : err instanceof UnexpectedReply
          ? "unexpected_reply"
          : "unreachable";
    return { ok: false, latencyMs: Date.now() - start, error };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/** Really talks to Redis and Postgres; "ok" only if both answered. */
export async function checkHealth(deps: Pick<Deps, "redis" | "db">) {
  const [redis, postgres] = await Promise.all([
    timed("redis", async () => {
      const pong = await deps.redis.ping();
      if (pong !== "PONG") throw new UnexpectedReply(`unexpected PING reply ${String(pong).slice(0, 40)}`);
    }),
    timed("postgres", () => deps.db.query("SELECT 1")),
  ]);
  return {
    status: redis.ok && postgres.ok ? ("ok" as const) : ("degraded" as const),
    checks: { redis, postgres },
  };
}
