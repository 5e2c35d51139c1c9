import { loadConfig } from "./config.ts";
import { createDeps } from "./deps.ts";
import type { Bindings } from "./env.ts";
import { type Job, type JobOutcome, runGuarded } from "./jobs/guard.ts";
import { jobs as registry } from "./jobs/registry.ts";

/** Runs every registered job once, each under the guard; one job failing does not stop the others. */
export async function runScheduled(env: Bindings, jobs: Job[] = registry): Promise<JobOutcome[]> {
  const { deps, dispose } = createDeps(loadConfig(env));
  try {
    const outcomes: JobOutcome[] = [];
    for (const job of jobs) outcomes.push(await runGuarded(deps, job));
    console.log(
      JSON.stringify({ level: "info", msg: "cron", outcomes: outcomes.map((o) => `${o.job}:${o.status}`) }),
    );
    return outcomes;
  } finally {
    await dispose();
  }
}
