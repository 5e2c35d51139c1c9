import type { RedisClient } from "../redis.ts";

export interface LuaScript {
  name: string;
  /** SHA-1 of source, as Redis computes it for SCRIPT LOAD / EVALSHA. */
  sha: string;
  source: string;
}

/** Runs a script by SHA and falls back to EVAL (which also caches it) when Redis answers NOSCRIPT. */
export async function runScript(
  redis: Pick<RedisClient, "evalsha" | "eval">,
  script: LuaScript,
  keys: string[],
  args: (string | number)[],
): Promise<unknown> {
  const argv = args.map(String);
  try {
    return await redis.evalsha(script.sha, keys, argv);
  } catch (err) {
    if (!String((err as Error)?.message ?? err).includes("NOSCRIPT")) throw err;
    return await redis.eval(script.source, keys, argv);
  }
}
