import { keys } from "../../../shared/keys.ts";
import { runScript } from "../../../shared/lua/script.ts";
import { heartbeat as countRun } from "../../../shared/lua/scripts.gen.ts";
import type { Deps } from "../deps.ts";
import { appendAudit } from "../services/audit.ts";

/** A scheduled job. Jobs that move money, change auth, delete in bulk or touch infra must file approvals. */
export interface Job {
  name: string;
  /** Runaway cap: at most this many runs per hour; further runs are skipped and recorded. */
  maxRunsPerHour: number;
  run(deps: Deps): Promise<Record<string, unknown>>;
}

export type JobOutcome = {
  job: string;
  status: "ok" | "failed" | "skipped";
  detail: Record<string, unknown>;
};

/**
 * The one guard every autonomous loop runs under: the kill switch (one Redis key stops them all),
 * a pause of this loop (ADR 0018), a per-loop execution cap, and a job_runs record of every run, skip and failure.
 */
export async function runGuarded(deps: Deps, job: Job): Promise<JobOutcome> {
  const startedAt = deps.now();
  let outcome: JobOutcome;
  if (await deps.redis.get(keys.killSwitch())) {
    outcome = { job: job.name, status: "skipped", detail: { reason: "kill_switch" } };
  } else if (await deps.redis.get(keys.loopPaused(job.name))) {
    // Paused by an operator or the ops agent (ADR 0018): this loop alone, until resumed.
    outcome = { job: job.name, status: "skipped", detail: { reason: "paused" } };
  } else {
    const hour = startedAt.toISOString().slice(0, 13);
    const runs = Number(await runScript(deps.redis, countRun, [keys.jobRuns(job.name, hour)], [3600]));
    if (runs > job.maxRunsPerHour) {
      outcome = {
        job: job.name,
        status: "skipped",
        detail: { reason: "run_cap", runs, cap: job.maxRunsPerHour },
      };
    } else {
      try {
        outcome = { job: job.name, status: "ok", detail: await job.run(deps) };
      } catch (err) {
        outcome = {
          job: job.name,
          status: "failed",
          detail: { error: String((err as Error)?.message ?? err) },
        };
      }
    }
  }
  await deps.db.query(
    "INSERT INTO job_runs (job, started_at, finished_at, status, detail) VALUES ($1, $2, now(), $3, $4)",
    [job.name, startedAt.toISOString(), outcome.status, JSON.stringify(outcome.detail)],
  );
  // A loop that was stopped (kill switch, run cap) or broke is an event for the audit chain; money a
  // successful run moves is audited by the service that moves it, and job_runs records every run.
  if (outcome.status !== "ok")
    await appendAudit(deps.db, {
      actor: `cron:${job.name}`,
      action: `job.${outcome.status}`,
      subject: job.name,
      detail: outcome.detail,
    });
  return outcome;
}
