import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { freePort, type Service, startProcess, waitUntil } from "../../dev/proc.ts";

const root = join(import.meta.dirname, "..", "..");

export interface Api {
  url: string;
  service: Service;
  stop(): Promise<void>;
}

/** The real API: `wrangler dev` (workerd) on a free port with the given vars. */
export async function startApi(
  vars: Record<string, string>,
  opts: { tmp: string; echo?: boolean },
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
      WRANGLER_LOG_PATH: persist,
      NO_COLOR: "1",
    },
  });
  const url = `http://127.0.0.1:${port}`;
  await waitUntil(
    async () => {
      if (service.child.exitCode !== null)
        throw new Error(`wrangler dev exited:\n${service.output().slice(-3000)}`);
      const res = await fetch(`${url}/openapi.json`).catch(() => undefined);
      return res?.ok;
    },
    60_000,
    `wrangler dev on ${port}`,
  ).catch((err) => {
    void service.stop();
    throw err;
  });
  return { url, service, stop: async () => void (await service.stop()) };
}
