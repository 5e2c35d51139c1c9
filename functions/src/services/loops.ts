/** The autonomous loops as operators see them: each job's last run and its runs this hour (job_runs). */
import type { Queryable } from "../../../shared/db/pool.ts";

export interface LoopState {
  job: string;
  /** the runaway cap the guard enforces (functions/src/jobs/guard.ts) */
  maxRunsPerHour: number;
  lastRun: { startedAt: Date; status: string; detail: Record<string, unknown> } | null;
  /** runs, skips and failures recorded in the last hour */
  runsLastHour: number;
}

export async function readLoops(
  db: Queryable,
  loops: readonly { name: string; maxRunsPerHour: number }[],
  now: Date,
): Promise<LoopState[]> {
  const names = [...new Set(loops.map((l) => l.name))];
  const { rows } = await db.query<{
    job: string;
    started_at: string | Date;
    status: string;
    detail: Record<string, unknown> | null;
    runs: string;
  }>(
    // One index probe per job (job_runs_job): the latest row, and the last hour's count.
    `SELECT j.job, l.started_at, l.status, l.detail,
            (SELECT count(*) FROM job_runs r
              WHERE r.job = j.job AND r.started_at > $2::timestamptz - interval '1 hour') AS runs
       FROM unnest($1::text[]) AS j(job)
       JOIN LATERAL (SELECT started_at, status, detail FROM job_runs WHERE job = j.job
                      ORDER BY started_at DESC LIMIT 1) l ON true`,
    [names, now.toISOString()],
  );
  const byJob = new Map(rows.map((r) => [r.job, r]));
  const seen = new Set<string>();
  return loops
    .filter((l) => !seen.has(l.name) && seen.add(l.name))
    .map((l) => {
      const r = byJob.get(l.name);
      return {
        job: l.name,
        maxRunsPerHour: l.maxRunsPerHour,
        lastRun: r ? { startedAt: new Date(r.started_at), status: r.status, detail: r.detail ?? {} } : null,
        runsLastHour: Number(r?.runs ?? 0),
      };
    });
}
