import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { freePort, GiveUp, type Service, startProcess, waitUntil } from "../../dev/proc.ts";
import type { StateEnv } from "../../dev/services.ts";

const root = join(import.meta.dirname, "..", "..");

export interface Api {
  url: string;
  service: Service;
  stop(): Promise<void>;
}

/** The vars that point the API at this run's Redis and Postgres, with its JWT secret. */
export function stateVars(e: StateEnv): Record<string, string> {
  return {
    ENVIRONMENT: "development",
    DATABASE_URL: e.DATABASE_URL,
    NEON_WS_PROXY: e.NEON_WS_PROXY,
    UPSTASH_REDIS_REST_URL: e.UPSTASH_REDIS_REST_URL,
    UPSTASH_REDIS_REST_TOKEN: e.UPSTASH_REDIS_REST_TOKEN,
    JWT_SECRET: e.JWT_SECRET,
  };
}

/**
 * The real API: `wrangler dev` (workerd) on a free port with the given vars. Test files run in
 * parallel, so another process may take the port between freePort() and workerd's bind: that one
 * failure is retried on a new port.
 */
export async function startApi(
  vars: Record<string, string>,
  opts: { tmp: string; echo?: boolean; logDir?: string },
): Promise<Api> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startApiOnce(vars, opts);
    } catch (err) {
      if (attempt >= 3 || !/Address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startApiOnce(
  vars: Record<string, string>,
  opts: { tmp: string; echo?: boolean; logDir?: string },
): Promise<Api> {
  const port = await freePort();
  const persist = mkdtempSync(join(opts.tmp, "wrangler-"));
  const args = [
    "dev",
    "--local",
    "--ip",
    "127.0.0.1",
    "--port",
    String(port),
    "--persist-to",
    persist,
    "--show-interactive-dev-session=false",
    "--test-scheduled",
  ];
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
  const service = startProcess("api", join(root, "node_modules", ".bin", "wrangler"), args, {
    cwd: root,
    echo: opts.echo,
    env: {
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
      WRANGLER_LOG_PATH: opts.logDir ?? persist,
      NO_COLOR: "1",
    },
  });
  const url = `http://127.0.0.1:${port}`;
  await waitUntil(
    async () => {
      if (service.child.exitCode !== null)
        throw new GiveUp(`wrangler dev exited:\n${service.output().slice(-3000)}`);
      const res = await fetch(`${url}/openapi.json`).catch(() => undefined);
      return res?.ok;
    },
    60_000,
    `wrangler dev on ${port}`,
  ).catch(async (err) => {
    await service.stop();
    throw err;
  });
  return { url, service, stop: async () => void (await service.stop()) };
}
